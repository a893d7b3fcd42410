"""The small dataclasses that flow between the Coordinator, guides and strategies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

from decoding.counting import CountingAR
from decoding.sampling import Marginals, Rows
from decoding.schedules import Schedule


@dataclass(frozen=True)
class StepInfo:
    """Where a step sits on the time grid: it moves from time ``t`` to time ``s < t``."""

    index: int
    num_steps: int
    t: float
    s: float
    schedule: Schedule

    @property
    def alpha_t(self) -> float:
        return self.schedule.alpha(self.t)

    @property
    def alpha_s(self) -> float:
        return self.schedule.alpha(self.s)

    @property
    def is_last(self) -> bool:
        return self.index == self.num_steps - 1


@dataclass
class StepState:
    """What a strategy may look at (tensors only; a strategy never calls a model).

    Attributes:
        x: (B, L) long, current tokens (``mask_id`` where masked).
        masked: (B, L) bool, positions masked now.
        free: (B, L) bool, positions the sampler generates (False: clamped prompt/infill).
        confidence: (B, L) float64, q(token) at the time each position was decoded (0 if never).
        marginals: the step's proposal marginals, or None when the strategy asked before the
            denoiser ran (value-independent strategies).
        draft: (B, L) long drafted values at masked positions, when the strategy needs them.
        draft_log_q: (B, L) float64 log q(draft) under the marginals, when drafted.
        log_mass: (B, L) log of the denoiser's score mass over real tokens, for strategies
            with ``needs_mass`` (see ``decoding.protocols.Denoiser``).
        window: with a denoiser KV cache, (B, L) bool, each row's current block (the only
            rows the denoiser computes; ``decoding.cache``); None without one.
    """

    x: Tensor
    masked: Tensor
    free: Tensor
    confidence: Tensor
    marginals: Marginals | None = None
    draft: Tensor | None = None
    draft_log_q: Tensor | None = None
    log_mass: Tensor | None = None
    window: Tensor | None = None


@dataclass
class Selection:
    """A strategy's answer: which masked positions to reveal, which decoded ones to remask.

    ``fill`` (optional, (B, L) bool) marks positions to set to ``fill_value`` without drafting
    (used to pad after an end-of-sequence token).
    """

    reveal: Tensor
    remask: Tensor | None = None
    fill: Tensor | None = None
    fill_value: int | None = None


@dataclass
class GuideContext:
    """What a guide receives for one step.

    Attributes:
        x: (B, L) long current tokens; masked: (B, L) bool.
        request: (B, L) bool, masked positions whose values are needed this step.
        marginals: the step's proposal q(x0_i | x_t).
        info: the step's place on the time grid.
        causal_log_probs: call to get the denoiser's prefix-only log-probs (B, L, V) for the
            current x (computed once, on demand, and counted by the Coordinator); called with
            ``hide`` ((B, L) bool), for x with those positions masked as well.
        ar: the guide's AR model (its ``ar`` attribute) behind a ``decoding.counting.CountingAR``
            that counts every call; guides make all their AR calls through it (None for a
            guide without an AR model).
        causal_rows: the same as a ``Rows``, computed only for the rows the guide declared
            with ``needed_rows`` (every row when it declared none); index it with a (B, L)
            bool mask. Takes the same optional ``hide``.
        window: with a denoiser KV cache (``decoding.cache``), (B, L) bool, the current
            block of each row: the only rows computed (None without a cache).
    """

    x: Tensor
    masked: Tensor
    request: Tensor
    marginals: Marginals
    info: StepInfo
    causal_log_probs: Callable[..., Tensor]
    ar: CountingAR | None = None
    causal_rows: Callable[..., Rows] | None = None
    window: Tensor | None = None


@dataclass
class Draft:
    """A guide's proposal: values for (at least) the requested positions.

    Attributes:
        tokens: (B, L) long; equals x outside the drafted positions.
        log_q: (B, L) float64 log q(token) under the step's marginals at drafted positions
            (the Coordinator computes it when a guide leaves it None).
        ess: (B,) float effective sample size of an importance-resampling guide, else None.

    AR calls are not reported here: the engine counts them through ``GuideContext.ar``.
    """

    tokens: Tensor
    log_q: Tensor | None = None
    ess: Tensor | None = None


@dataclass
class StepRecord:
    """Per-step trace, summed over batches (``ess`` averaged over rows when a guide gives it)."""

    index: int
    t: float
    s: float
    revealed: int = 0
    remasked: int = 0
    seconds: float = 0.0
    denoiser_forwards: int = 0
    denoiser_tokens: int = 0
    ess: float | None = None


@dataclass
class GenerationResult:
    """Output of ``Coordinator.generate``.

    Attributes:
        tokens: (N, L) long, no mask left.
        nfe: {"denoiser": forwards, "ar_forwards": calls, "ar_tokens": positions}, summed over
            all batches (a forward on a batch counts once).
        trace: one ``StepRecord`` per step.
        seconds: wall-clock of the whole generation.
        num_batches: how many batches the samples were generated in.
        steps_per_sample: (N,) float64, the denoising steps each sample used: the configured
            count, except for guides that own the loop (APD's rounds, speculative decoding's
            windows, each one AR verification) and adaptive strategies (``Threshold``: the
            steps at which the sample still had masked positions; ``steps`` is their cap).
        denoiser_tokens: the token positions the denoiser's forwards ran, summed over rows
            (B*L per uncached forward; a cached forward runs the positions it recomputes).
    """

    tokens: Tensor
    nfe: dict[str, int]
    trace: list[StepRecord] = field(default_factory=list)
    seconds: float = 0.0
    num_batches: int = 1
    steps_per_sample: Tensor | None = None
    denoiser_tokens: int = 0

    @property
    def steps_used(self) -> float | None:
        """Mean of ``steps_per_sample``."""
        sps = self.steps_per_sample
        return None if sps is None else float(sps.mean())
