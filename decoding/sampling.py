"""Categorical sampling in float64 with bounded memory, and the marginals' transforms.

Why float64: Gumbel-max with float32 uniforms caps the Gumbel noise near 16.6 (instead of ~36.7
in float64), which silently sharpens the distribution and inflates the winners' share (Zheng et
al. 2024: MDLM's gen PPL at 2048 steps moved from 31 to 126 once sampling was done in float64).
Here every draw is an inverse-CDF draw in float64 on the rows that need a value, a chunk of rows
at a time, so the peak extra memory is one float64 chunk, not a copy of the (B, L, V) logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from decoding.checks import device_check

BAD_ROWS = "marginals contain NaN, +inf, or a row with no finite entry"
CHUNK_ELEMENTS = 1 << 21  # float64 elements per chunk (16 MiB): a small fraction of real logits


def _chunk_rows(vocab_size: int, num_samples: int = 1) -> int:
    """Rows per chunk: each row costs its V entries plus K gathered blocks when drawing."""
    per_row = vocab_size + num_samples * min(BLOCK, vocab_size)
    return max(1, CHUNK_ELEMENTS // per_row)


def normalize_rows(
    rows: Tensor, temperature: float = 1.0, top_p: float = 1.0, check: bool = True
) -> Tensor:
    """Turn (n, V) log-weights into float64 normalised log-probs after temperature and top-p.

    Top-p (nucleus, Holtzman et al. 2020) keeps the smallest set of most likely tokens whose
    mass reaches ``top_p`` (the top token is always kept).
    """
    rows = rows.to(torch.float64)
    # amax propagates NaN, so one reduction catches NaN, +inf and all -inf rows.
    if check:
        device_check(torch.isfinite(rows.amax(dim=-1)).all(), BAD_ROWS)
    if temperature != 1.0:
        rows = rows / temperature
    rows = torch.log_softmax(rows, dim=-1)
    if top_p < 1.0:
        sorted_lp, order = rows.sort(dim=-1, descending=True)
        mass_before = sorted_lp.exp().cumsum(dim=-1) - sorted_lp.exp()
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
        rows = torch.log_softmax(rows.masked_fill(drop, -torch.inf), dim=-1)
    return rows


BLOCK = 256  # two-level search: per-block sums, then a cumulative sum inside one block


def _exp_padded(log_weights: Tensor, normalized: bool) -> tuple[Tensor, Tensor]:
    """exp of (n, V) rows into a zero-padded (n, nb, BLOCK) buffer, and the shift used (n, 1)."""
    n, V = log_weights.shape
    block = min(BLOCK, V)
    nb = -(-V // block)
    buf = log_weights.new_empty(n, nb * block)
    buf[:, V:] = 0.0
    if normalized:  # log-probs are <= 0: exp cannot overflow, no max pass needed
        shift = log_weights.new_zeros(n, 1)
        torch.exp(log_weights, out=buf[:, :V])
    else:
        shift = log_weights.amax(dim=-1, keepdim=True)
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        torch.sub(log_weights, shift, out=buf[:, :V])
        buf[:, :V].exp_()
    return buf.view(n, nb, block), shift


def inverse_cdf(log_weights: Tensor, num_samples: int, generator: torch.Generator | None,
                normalized: bool = False, uniforms: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
    """Draw ``num_samples`` tokens per row of (n, V) log-weights.

    Returns (tokens (n, K) long, their normalised float64 log-probabilities (n, K)).
    ``normalized=True`` promises the rows are log-probabilities (skips the max pass).
    ``uniforms`` (n, K) float64 in [0, 1): use these instead of drawing from ``generator``
    (draws from two distributions under shared noise, as APD's acceptance test needs).

    Two-level search: the row is cut into blocks of BLOCK entries; a block is chosen from the
    float64 cumulative block masses, then a token inside it from a float64 cumulative sum of
    that block alone. The full rows are read twice (exp, block sums); exponentials and block
    sums may be float32 (relative error ~1e-7 whatever the magnitude), while the uniforms and
    cumulative sums are float64, so a token of probability 1e-12 is drawn at its rate.
    """
    n, V = log_weights.shape
    e, shift = _exp_padded(log_weights, normalized)  # (n, nb, BLOCK)
    block_cdf = e.sum(dim=-1).to(torch.float64).cumsum_(dim=-1)  # (n, nb)
    total = block_cdf[:, -1:]
    # NaN, +inf and all -inf rows all end here: the row total is not a positive finite number.
    device_check((torch.isfinite(total) & (total > 0)).all(), BAD_ROWS)
    u = uniforms if uniforms is not None else torch.rand(
        n, num_samples, dtype=torch.float64, device=e.device, generator=generator)
    target = u * total  # (n, K)
    # Counting entries <= target is searchsorted(right=True) without its per-row overhead;
    # it skips zero-mass blocks and tokens (their cdf equals their predecessor's).
    b = (block_cdf[:, None, :] <= target[..., None]).sum(-1).clamp_(max=e.shape[1] - 1)
    before = torch.where(b > 0, block_cdf.gather(1, (b - 1).clamp(min=0)), 0.0)
    mass = block_cdf.gather(1, b) - before
    inner = e[torch.arange(n, device=e.device)[:, None], b].to(torch.float64).cumsum(-1)
    rest = (target - before) * inner[..., -1] / mass  # rescaled to the block's own sum
    j = (inner <= rest[..., None]).sum(-1)
    last_positive = (inner < inner[..., -1:]).sum(dim=-1)  # rounding guard at a block's end
    idx = (b * e.shape[-1] + torch.minimum(j, last_positive)).clamp_(max=V - 1)
    log_q = (log_weights.gather(-1, idx).to(torch.float64) - shift.to(torch.float64)
             - total.log())
    return idx, log_q


def gumbel_max(logits: Tensor, generator: torch.Generator, dtype=torch.float64) -> Tensor:
    """Gumbel-max draw from (n, V) logits with uniforms of ``dtype``.

    Kept to show, in tests, the float32 bias that the float64 path avoids.
    """
    tiny = torch.finfo(dtype).tiny
    u = torch.rand(logits.shape, dtype=dtype, device=logits.device, generator=generator)
    g = -torch.log(-torch.log(u.clamp_min(tiny)))
    return (logits.to(dtype) + g).argmax(dim=-1)


def check_transforms(temperature: float, top_p: float) -> None:
    """Fail loudly on a temperature or nucleus mass that cannot define a distribution."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature} (greedy decoding, the "
                         "temperature-0 limit: decoding.guides.Greedy)")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


class Rows:
    """Per-position rows of a (B, L, V) quantity, stored in full or packed.

    A denoiser asked for some rows only (``decoding.protocols.Denoiser``) returns them packed:
    (n, V) for the n True entries of a (B, L) mask, in row-major order. ``take`` reads rows by
    flat position either way; asking for a row that was not computed fails.
    """

    def __init__(self, data: Tensor, rows: Tensor | None = None):
        if rows is None and data.dim() != 3:
            raise ValueError(f"full rows must be (B, L, V), got {tuple(data.shape)}")
        if rows is not None and (data.dim() != 2 or rows.dim() != 2):
            raise ValueError(f"packed rows must be (n, V) with a (B, L) mask, got "
                             f"{tuple(data.shape)} and {tuple(rows.shape)}")
        self.data, self.rows = data, rows
        self._slot: Tensor | None = None

    @property
    def shape(self) -> torch.Size:
        if self.rows is None:
            return self.data.shape
        return torch.Size((*self.rows.shape, self.data.shape[-1]))

    @property
    def device(self) -> torch.device:
        return self.data.device

    def take(self, flat_idx: Tensor) -> Tensor:
        """Rows at flat positions ``flat_idx`` (n,) long -> (n, V)."""
        if self.rows is None:
            return self.data.reshape(-1, self.data.shape[-1])[flat_idx]
        flat = self.rows.reshape(-1)
        if self._slot is None:
            self._slot = flat.cumsum(0) - 1  # position -> row of the packed data
        device_check(flat[flat_idx].all(), "a row was asked for that was not computed",
                     RuntimeError)
        return self.data[self._slot[flat_idx]]

    def __getitem__(self, where: Tensor) -> Tensor:
        """Rows at the True entries of a (B, L) bool mask, row-major -> (n, V)."""
        return self.take(where.reshape(-1).nonzero().squeeze(-1))


class Marginals:
    """Per-position proposal q(x0_i | x_t): the denoiser's log-probs plus temperature/top-p.

    The transforms are applied lazily, by row chunks, to the rows that are asked for, so the
    raw rows are never copied or modified (the engine may reuse them across steps).
    ``log_probs`` is a (B, L, V) tensor or a ``Rows`` (possibly packed).
    """

    def __init__(self, log_probs: Tensor | Rows, temperature: float = 1.0, top_p: float = 1.0):
        check_transforms(temperature, top_p)
        self.raw = log_probs if isinstance(log_probs, Rows) else Rows(log_probs)
        self.temperature = temperature
        self.top_p = top_p

    @property
    def shape(self) -> torch.Size:
        return self.raw.shape

    @property
    def transformed(self) -> bool:
        return self.temperature != 1.0 or self.top_p < 1.0

    def _chunks(self, where: Tensor, normalized: bool = True, num_samples: int = 1):
        """Yield (row indices (n,), rows (n, V)) for the True entries of ``where``.

        Rows are float64 normalised log-probs, or, with ``normalized=False`` and no transform,
        the raw rows (log-probs up to a constant), which is all sampling needs.
        """
        # nonzero synchronises: how many rows to draw is the data's answer, not a constant.
        idx = where.reshape(-1).nonzero().squeeze(-1)
        step = _chunk_rows(self.shape[-1], num_samples)
        for start in range(0, idx.numel(), step):
            rows_idx = idx[start : start + step]
            rows = self.raw.take(rows_idx)
            if normalized or self.transformed:
                rows = normalize_rows(rows, self.temperature, self.top_p)
            yield rows_idx, rows

    def sample(
        self, where: Tensor, generator: torch.Generator, num_samples: int = 1
    ) -> tuple[Tensor, Tensor]:
        """Draw tokens at the True positions of ``where`` (B, L).

        Returns ``(tokens, log_q)`` of shape (K, B, L): long tokens (0 elsewhere) and their
        float64 log-probabilities under q (0 elsewhere). Rows are drawn in row-major order.
        """
        k = num_samples
        B, L, _ = self.shape
        tokens = torch.zeros(k, B * L, dtype=torch.long, device=self.raw.device)
        log_q = torch.zeros(k, B * L, dtype=torch.float64, device=self.raw.device)
        for rows_idx, rows in self._chunks(where, normalized=False, num_samples=k):
            draw, lq = inverse_cdf(rows, k, generator, normalized=not self.transformed)
            tokens[:, rows_idx] = draw.T
            log_q[:, rows_idx] = lq.T
        return tokens.view(k, B, L), log_q.view(k, B, L)

    def log_prob(self, tokens: Tensor, where: Tensor) -> Tensor:
        """log q(tokens) at the True positions of ``where`` -> (B, L) float64, 0 elsewhere."""
        out = torch.zeros(tokens.numel(), dtype=torch.float64, device=self.raw.device)
        flat_tokens = tokens.reshape(-1)
        for rows_idx, lp in self._chunks(where):
            out[rows_idx] = lp.gather(-1, flat_tokens[rows_idx, None]).squeeze(-1)
        return out.view(tokens.shape)

    def reduce(self, where: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        """Apply ``fn``: (n, V) normalised log-probs -> (n,) to the True rows; (B, L) float64.

        Untransformed rows are the denoiser's own log-probs (normalised by the protocol), used
        in their own dtype: scores only rank positions.
        """
        out = torch.zeros(where.numel(), dtype=torch.float64, device=self.raw.device)
        for rows_idx, rows in self._chunks(where, normalized=False):
            out[rows_idx] = fn(rows).double()
        return out.view(where.shape)

    def rows(self, where: Tensor) -> Tensor:
        """Normalised float64 rows at the True positions, in row-major order -> (n, V)."""
        parts = [lp for _, lp in self._chunks(where)]
        if not parts:
            return torch.zeros(0, self.shape[-1], dtype=torch.float64, device=self.raw.device)
        return torch.cat(parts)
