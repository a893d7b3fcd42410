"""The Coordinator: owns the denoising loop and every model call.

One step = (1) the denoiser's marginals, (2) a guide's joint draft of values, (3) a strategy's
choice of positions to commit (and remask). When the strategy's choice does not depend on the
values (ancestral, left-to-right, ReMDM), it is asked first, only the chosen positions are
drafted, and a step that chooses nothing costs no forward at all. When it chooses by the
denoiser's score mass (SEDD's analytic and Euler steps), the denoiser runs first, then the
strategy chooses, then only the chosen positions are drafted.

The denoiser is called at its own training schedule's time with the sampler's alpha
(``decoding.schedules.denoiser_time``), and a guide's AR calls go through a counting handle
(``decoding.counting``): both are owned here, not by the models or the guides.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor
from tqdm.auto import tqdm

from decoding.cache import check_cache
from decoding.checks import device_check, not_any
from decoding.counting import CountingAR
from decoding.denoiser_batch import DenoiserBatch
from decoding.guides.independent import Independent
from decoding.loop import BatchLoop
from decoding.sampling import Marginals, check_transforms
from decoding.schedules import (
    LogLinear,
    Schedule,
    check_pairing,
    denoiser_time,
    training_schedule,
)
from decoding.strategies.base import Strategy
from decoding.types import (
    Draft,
    GenerationResult,
    GuideContext,
    Selection,
    StepInfo,
    StepRecord,
    StepState,
)


def _model_device(model) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for tensor in list(model.parameters()) + list(model.buffers()):
            return tensor.device
    return torch.device(getattr(model, "device", "cpu"))


class Coordinator:
    """Generate with a denoiser, a step strategy and a guide.

    Args:
        denoiser: satisfies ``decoding.protocols.Denoiser``.
        strategy: a ``decoding.strategies`` object (which positions to commit).
        guide: which values to propose (default ``Independent``: the plain parallel step).
        schedule: noise schedule of the sampler (default log-linear, as SEDD/MDLM). The
            denoiser is called at its own time with the same alpha (see
            ``decoding.schedules.denoiser_time``); a pairing that cannot be mapped is refused.
        temperature, top_p: transforms of the marginals before any draw (nucleus as ReMDM).
        rows_only: ask a denoiser that ``supports_rows`` for the rows each step needs only
            (the same tokens either way; False computes every row, for comparisons).
        cache, refresh_every: a denoiser KV cache ("none", "prefix", "dual"; with Blocks),
            rebuilt at block starts and every ``refresh_every`` calls (``decoding.cache``).
    """

    def __init__(self, denoiser, strategy: Strategy, guide=None, schedule: Schedule | None = None,
                 temperature: float = 1.0, top_p: float = 1.0, rows_only: bool = True,
                 cache: str = "none", refresh_every: int | None = None):
        for attr in ("vocab_size", "mask_id", "log_probs"):
            if not hasattr(denoiser, attr):
                raise TypeError(f"denoiser lacks `{attr}` (see decoding.protocols.Denoiser)")
        if 0 <= denoiser.mask_id < denoiser.vocab_size:
            raise ValueError(f"mask_id {denoiser.mask_id} lies inside the real vocabulary "
                             f"0..{denoiser.vocab_size - 1}")
        check_transforms(temperature, top_p)
        self.denoiser, self.strategy = denoiser, strategy
        self.guide = guide if guide is not None else Independent()
        self.schedule = schedule if schedule is not None else LogLinear()
        self.temperature, self.top_p = temperature, top_p
        self.vocab_size, self.mask_id = denoiser.vocab_size, denoiser.mask_id
        self.time_conditioned = bool(getattr(denoiser, "time_conditioned", True))
        self.rows_only = bool(rows_only and getattr(denoiser, "supports_rows", False))
        self.training_schedule = training_schedule(denoiser)
        check_pairing(self.schedule, self.training_schedule)
        if strategy.needs_mass and not hasattr(denoiser, "log_probs_with_mass"):
            raise ValueError(f"{type(strategy).__name__} reveals by the denoiser's score mass, "
                             f"which {type(denoiser).__name__} does not provide (it has no "
                             "`log_probs_with_mass`, see decoding.protocols.Denoiser); use an "
                             "MDLM-style strategy such as Ancestral")
        self.guide.check(denoiser)
        ar = getattr(self.guide, "ar", None)
        self.ar = None if ar is None else CountingAR(ar)
        if hasattr(self.guide, "check_strategy"):  # guides that accept only some strategies
            self.guide.check_strategy(strategy)
        check_cache(cache, refresh_every, denoiser, strategy, self.guide)
        self.cache, self.refresh_every = cache, refresh_every

    def denoiser_time(self, t: float) -> float:
        """The time the denoiser is called at for the sampler's time t (t itself when the
        sampler uses the denoiser's own schedule)."""
        return denoiser_time(t, self.schedule, self.training_schedule)

    def _prompt(self, prompt: Tensor | None, n: int, length: int) -> Tensor:
        if prompt is None:
            return torch.full((n, length), self.mask_id, dtype=torch.long)
        prompt = torch.as_tensor(prompt).cpu()
        if prompt.dtype not in (torch.long, torch.int32, torch.int64):
            raise TypeError(f"prompt must hold integer token ids, got {prompt.dtype}")
        prompt = prompt.long()
        if prompt.dim() == 1:
            prompt = prompt.expand(n, -1)
        if prompt.dim() != 2 or tuple(prompt.shape) != (n, length):
            raise ValueError(f"prompt must have shape ({length},) or ({n}, {length}), "
                             f"got {tuple(prompt.shape)}")
        bad = ((prompt < 0) | (prompt >= self.vocab_size)) & (prompt != self.mask_id)
        if bad.any():
            raise ValueError(f"prompt holds ids outside 0..{self.vocab_size - 1} that are not "
                             f"the mask id {self.mask_id}: {prompt[bad][:5].tolist()}")
        return prompt.clone()

    def _validate(self, num_samples: int, length: int, steps: int, batch_size: int | None):
        for name, value in (("num_samples", num_samples), ("length", length), ("steps", steps)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        max_len = getattr(self.denoiser, "max_length", None)
        if max_len is not None and length > max_len:
            raise ValueError(f"length {length} exceeds the denoiser's maximum {max_len}")
        self.strategy.check(steps, length)

    def generate(self, num_samples: int, length: int, steps: int, *,
                 generator: torch.Generator | None = None, prompt: Tensor | None = None,
                 batch_size: int | None = None, progress: bool = False) -> GenerationResult:
        """Draw ``num_samples`` sequences of ``length`` tokens in ``steps`` denoising steps.

        ``prompt`` (L,) or (N, L) long holds the mask id where tokens are generated; every
        other position is clamped. Returns tokens (N, L) on the CPU, forward counts and a trace.
        """
        self._validate(num_samples, length, steps, batch_size)
        rows = self._prompt(prompt, num_samples, length)
        device = _model_device(self.denoiser)
        if generator is None:
            generator = torch.Generator(device).manual_seed(int(torch.randint(2**62, ()).item()))
        if generator.device.type != device.type:
            raise ValueError(f"generator is on {generator.device}, the denoiser on {device}")
        times = self.strategy.times(self.schedule, steps)
        n_steps = len(times) - 1
        infos = [StepInfo(j, n_steps, times[j], times[j + 1], self.schedule)
                 for j in range(n_steps)]
        trace = [StepRecord(i.index, i.t, i.s) for i in infos]
        ess_sums = [[0.0, 0] for _ in infos]
        nfe = {"denoiser": 0, "ar_forwards": 0, "ar_tokens": 0}
        self._tokens = 0
        self._pending: list[tuple[StepRecord, str, Tensor]] = []
        bs = batch_size or num_samples
        starts = range(0, num_samples, bs)
        out, rounds = [], []
        bar = tqdm(total=len(starts) * n_steps, disable=not progress, desc="denoising")
        t0 = time.perf_counter()
        with torch.inference_mode():
            for start in starts:
                x = rows[start : start + bs].to(device)
                tokens, used = self._run(x, infos, generator, trace, ess_sums, nfe, bar)
                out.append(tokens.cpu())
                rounds.append(used.double().cpu())
        bar.close()
        self._settle()
        totals = torch.stack([torch.as_tensor(t, dtype=torch.float64, device=device)
                              for t, _ in ess_sums]).tolist()  # one read for the whole run
        for rec, total, (_, count) in zip(trace, totals, ess_sums):
            rec.ess = total / count if count else None
        return GenerationResult(tokens=torch.cat(out), nfe=nfe, trace=trace,
                                seconds=time.perf_counter() - t0, num_batches=len(starts),
                                steps_per_sample=torch.cat(rounds), denoiser_tokens=self._tokens)

    def _new_batch(self, x: Tensor) -> DenoiserBatch:
        return DenoiserBatch(self, x)

    def _run(self, x, infos, generator, trace, ess_sums, nfe, bar) -> tuple[Tensor, Tensor]:
        """One batch; returns its tokens and the denoising steps (rounds) each row used."""
        loop = BatchLoop(self, x, infos, generator, trace, ess_sums, bar)
        free, clamped = loop.free, x.clone()
        ar_before = self.ar.counts() if self.ar is not None else (0, 0)
        if hasattr(self.guide, "start"):
            self.guide.start(x)
        if hasattr(self.guide, "run"):  # a guide that owns the outer loop (see decoding.loop)
            x, rounds = self.guide.run(loop, x)
            bar.update(len(infos))
        else:
            confidence = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
            rounds = torch.full((x.shape[0],), float(len(infos)))
            if self.strategy.adaptive:  # `steps` is a cap: count the steps each row used
                rounds = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
            for info in infos:
                if self.strategy.adaptive:
                    rounds += (x == self.mask_id).any(dim=1)
                x, confidence, _, _ = loop.step(info, x, confidence)
                bar.update(1)
        nfe["denoiser"] += loop.total_forwards()
        self._tokens += loop.total_tokens()
        if self.ar is not None:
            forwards, tokens = self.ar.counts()
            nfe["ar_forwards"] += forwards - ar_before[0]
            nfe["ar_tokens"] += tokens - ar_before[1]
        if (x == self.mask_id).any():
            who = self.guide if hasattr(self.guide, "run") else self.strategy
            raise RuntimeError(f"{type(who).__name__} left masked positions after the last step")
        if not torch.equal(x[~free], clamped[~free]):
            raise RuntimeError("a clamped prompt position was changed")
        return x, rounds

    def _step(self, batch: DenoiserBatch, info: StepInfo, state: StepState, generator):
        """Ask the strategy and the guide, in the order the strategy needs."""
        if self.strategy.needs_draft:
            region = self.strategy.draft_region(info, state)
            need = self._needed_rows(state, region, info, strategy_rows=region)
            state.marginals = self._marginals(batch, state.x, info, need)
            draft = self._propose(batch, info, state, region, generator, need)
            state.draft, state.draft_log_q = draft.tokens, draft.log_q
            return self.strategy.select(info, state, generator), draft
        if self.strategy.needs_mass:  # the mass of every masked row, before choosing
            need = self._needed_rows(state, state.masked, info, strategy_rows=state.masked)
            state.marginals = self._marginals(batch, state.x, info, need)
            state.log_mass = batch.log_mass
        sel = self.strategy.select(info, state, generator)
        if not sel.reveal.any():  # a host read, needed to skip the forward
            return sel, None
        need = self._needed_rows(state, sel.reveal, info)
        if state.marginals is None:
            state.marginals = self._marginals(batch, state.x, info, need)
        return sel, self._propose(batch, info, state, sel.reveal, generator, need)

    def _needed_rows(self, state: StepState, request: Tensor, info: StepInfo,
                     strategy_rows: Tensor | None = None) -> Tensor | None:
        """(B, L) bool rows the guide (and a value-dependent strategy) will read; None: all.

        A guide without ``needed_rows`` gets every row.
        """
        ask = getattr(self.guide, "needed_rows", None)
        if not self.rows_only or ask is None:
            return None
        need = ask(state.masked, request, info)
        if need is None:
            return None
        if state.window is not None:  # a cache computes the block: what the guide reads there
            need = (need & state.window) | request
        return need if strategy_rows is None else need | strategy_rows

    def _marginals(self, batch: DenoiserBatch, x: Tensor, info: StepInfo,
                   need: Tensor | None = None) -> Marginals:
        t = info.t
        if self.strategy.adaptive and self.time_conditioned:  # off the grid: each row's own
            frac = (x == self.mask_id).double().mean(dim=1).clamp(min=1e-3)
            t = self.schedule.time_at(1.0 - frac)
        return Marginals(batch.rows(x, t, need=need), self.temperature, self.top_p)

    def _hidden(self, x: Tensor, hide: Tensor | None) -> Tensor:
        """x with the positions ``hide`` (B, L) bool masked as well (None: x itself)."""
        return x if hide is None else x.masked_fill(hide, self.mask_id)

    def _propose(self, batch, info, state, request, generator, need=None) -> Draft:
        ctx = GuideContext(x=state.x, masked=state.masked, request=request,
                           marginals=state.marginals, info=info,
                           causal_log_probs=lambda hide=None: batch.log_probs(
                               self._hidden(state.x, hide), info.t, causal=True),
                           causal_rows=lambda hide=None: batch.rows(
                               self._hidden(state.x, hide), info.t, True, need),
                           ar=self.ar, window=state.window)
        draft = self.guide.propose(ctx, generator)
        outside = (draft.tokens < 0) | (draft.tokens >= self.vocab_size)
        device_check(not_any(outside & request), f"{type(self.guide).__name__} proposed ids "
                     "outside the vocabulary", RuntimeError)
        if draft.log_q is None:
            draft.log_q = state.marginals.log_prob(draft.tokens, request)
        return draft

    def _settle(self) -> None:
        """Add the per-step counts kept on the device to the trace (one host read in all)."""
        if self._pending:
            values = torch.stack([v for _, _, v in self._pending]).tolist()
            for (rec, attr, _), value in zip(self._pending, values):
                setattr(rec, attr, getattr(rec, attr) + int(value))
        self._pending = []

    def _apply(self, x, masked, free, confidence, sel: Selection, draft, rec: StepRecord):
        reveal = sel.reveal
        device_check(not_any(reveal & ~masked),
                     f"{type(self.strategy).__name__} revealed unmasked positions", RuntimeError)
        if draft is not None:
            x = torch.where(reveal, draft.tokens, x)
            confidence = torch.where(reveal, draft.log_q.exp(), confidence)
        self._pending.append((rec, "revealed", reveal.sum()))
        if sel.remask is not None:
            remask = sel.remask & free & ~masked
            x = x.masked_fill(remask, self.mask_id)
            confidence = confidence.masked_fill(remask, 0.0)
            self._pending.append((rec, "remasked", remask.sum()))
        if sel.fill is not None:
            x = x.masked_fill(sel.fill & free, sel.fill_value)
        return x, confidence
