"""One batch's calls to the denoiser, as the Coordinator makes them.

The denoiser is called at its training schedule's time for the sampler's time, with the rows a
step needs (packed when the denoiser supports it) and, for strategies that reveal by the score
mass, the mass from the same forward. The last call is memoised, so an unchanged x costs no
new forward; every forward is counted, with the positions it ran. With a denoiser KV cache
(the Coordinator's ``cache``, ``decoding.cache``) the calls go through the batch's
``BatchCache``: the rows of the current block only, packed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from decoding.cache_batch import BatchCache
from decoding.checks import device_check, not_any
from decoding.counting import DenoiserCount
from decoding.sampling import Rows


class DenoiserBatch:
    """Per-batch memo of the last denoiser call, so an unchanged x costs no new forward.

    ``coordinator`` supplies the denoiser, the strategy, ``rows_only`` and the time mapping.
    """

    def __init__(self, coordinator, x: Tensor):
        self.c = coordinator
        self.free = x == coordinator.mask_id
        self.count = DenoiserCount()
        self._memo: dict[bool, tuple[Tensor, float, Rows]] = {}
        self.log_mass: Tensor | None = None  # (B, L), of the last bidirectional call
        mode = getattr(coordinator, "cache", "none")
        self.cache = None if mode == "none" else BatchCache(
            coordinator.denoiser, mode, getattr(coordinator, "refresh_every", None), x)

    @property
    def forwards(self) -> int:
        return self.count.forwards

    @property
    def tokens(self) -> int:
        return self.count.tokens

    def forget(self) -> None:
        """x is known to have changed: the next call needs no comparison (no host read)."""
        self._memo.clear()

    def log_probs(self, x: Tensor, t: float, causal: bool = False) -> Tensor:
        """Every row: (B, L, V) (not with a cache: it computes the current block only)."""
        if self.cache is not None:
            raise RuntimeError("every row of a call was asked for, but the denoiser cache "
                               "computes the rows of the current block only")
        return self.rows(x, t, causal).data

    def rows(self, x: Tensor, t: float | Tensor, causal: bool = False,
             need: Tensor | None = None) -> Rows:
        """The rows at ``need`` (B, L) bool (None: all), packed when the denoiser can.
        ``t``: the sampler's time, one for the batch or (B,) per row."""
        if isinstance(t, Tensor):
            t = tuple(t.tolist())
        # A strategy that reveals by the score mass gets the mass with the rows, in one call;
        # the mass depends on t even where the marginals do not.
        with_mass = self.c.strategy.needs_mass and not causal
        if not self.c.rows_only:
            need = None
        memo = self._memo.get(causal)
        if memo is not None and (memo[1] == t or not (self.c.time_conditioned or with_mass)):
            same = (memo[0] == x).all()
            if memo[2].rows is not None:
                same &= need is not None and not_any(need & ~memo[2].rows)
            if same.item():  # one read per call: skipping a forward needs to know
                return memo[2]
        if isinstance(t, tuple):
            t_vec = torch.tensor([self.c.denoiser_time(v) for v in t], dtype=torch.float32,
                                 device=x.device)
        else:
            t_vec = torch.full((x.shape[0],), self.c.denoiser_time(t), dtype=torch.float32,
                               device=x.device)
        packed = {} if need is None else {"rows": need}
        if self.cache is not None:
            lp, need, forwards, tokens = self.cache.call(x, t_vec, causal, need)
            self.count.add(forwards, tokens)
            out = Rows(lp, need)
            self._memo[causal] = (x.clone(), t, out)
            return out
        if with_mass:
            lp, self.log_mass = self.c.denoiser.log_probs_with_mass(x, t_vec, **packed)
            if tuple(self.log_mass.shape) != tuple(x.shape):
                raise ValueError(f"denoiser returned a score mass of shape "
                                 f"{tuple(self.log_mass.shape)}, expected {tuple(x.shape)}")
        else:
            lp = self.c.denoiser.log_probs(x, t_vec, causal=causal, **packed)
        if need is None:
            expected = (*x.shape, self.c.vocab_size)
            if tuple(lp.shape) != expected:
                raise ValueError(f"denoiser returned shape {tuple(lp.shape)}, expected {expected}")
        else:
            if lp.dim() != 2 or lp.shape[-1] != self.c.vocab_size:
                raise ValueError(f"denoiser returned shape {tuple(lp.shape)} for packed rows, "
                                 f"expected (n, {self.c.vocab_size})")
            device_check(need.sum() == lp.shape[0], "the denoiser returned a wrong row count")
        self.count.add(1, x.numel())
        out = Rows(lp, need)
        self._memo[causal] = (x.clone(), t, out)
        return out
