"""How the lm-eval model scores text: the denoiser's ELBO or the AR model's log-likelihood.

``Scorer.score(ctx, cont, key)`` returns (log-likelihood, is_greedy, log line) for token ids.
Neither score depends on the sampler (guide, strategy, steps), so a score is computed once per
request and reused for every step count of a run.
"""

from __future__ import annotations

import logging
import time

import torch

from experiments.config import ConfigError
from experiments.elbo import ELBO
from experiments.lm_eval_requests import seed_of

log = logging.getLogger(__name__)


def model_device(model) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for p in list(model.parameters()) + list(model.buffers()):
            return p.device
    return torch.device("cpu")


class Scorer:
    """Log-likelihoods for an ``EvalSession``.

    Args:
        session: the ``experiments.lm_eval_session.EvalSession``.
        mode: ``elbo`` (the denoiser's, ``experiments.elbo.ELBO``) or ``ar``.
        mc: the ELBO estimator's arguments (num_samples, batch_size, scheme, stratified).
        greedy_check: under the ELBO, whether ``is_greedy`` is computed (the denoiser's
            greedy decode, one committed position per forward) or reported False.
    """

    def __init__(self, session, mode: str, mc: dict, greedy_check: bool = False):
        self.session, self.mode, self.mc = session, mode, dict(mc)
        self.greedy_check = bool(greedy_check)
        self._elbo: ELBO | None = None
        self._memo: dict[tuple, tuple] = {}
        self._warned = False

    def check(self, tasks: list[str]) -> None:
        """Refuse to score ``tasks`` without a scorer (no model is loaded)."""
        s = self.session
        if self.mode == "none":
            raise ConfigError(f"task(s) {', '.join(tasks)} need loglikelihood, but this "
                              "configuration is sampler-only (loglikelihood=none); score with "
                              "loglikelihood=elbo (the denoiser's ELBO) or loglikelihood=ar")
        if self.mode == "ar" and not s.ar_configured:
            raise ConfigError(f"loglikelihood=ar for {', '.join(tasks)} needs an AR model "
                              "(ar=tiny, ar=gpt2, ...), and ar=none is configured")
        if s.name_of("guide") != "none" and not self._warned:
            self._warned = True
            log.warning("loglikelihood requests are scored by the %s alone: guide=%s, the "
                        "strategy and steps do not enter them", "denoiser's ELBO"
                        if self.mode == "elbo" else "AR model", s.name_of("guide"))

    @property
    def max_length(self) -> int | None:
        """Longest context + continuation the scorer takes."""
        if self.mode == "ar":
            return getattr(self.session.ar, "max_length", None)
        return self.session.max_length

    @property
    def elbo(self) -> ELBO:
        if self._elbo is None:
            self._elbo = ELBO(self.session.denoiser, **self.mc)
        return self._elbo

    def score(self, ctx: list[int], cont: list[int], key: str, greedy: bool = True,
              num_steps: int | None = None) -> tuple[float, bool, dict]:
        """(log-likelihood of ``cont`` after ``ctx``, is_greedy, its request-log line)."""
        t0 = time.perf_counter()
        line = {"num_steps": num_steps, "key": key, "context_tokens": len(ctx),
                "tokens": len(cont), "scorer": self.mode}
        if (key, greedy) in self._memo:
            value, is_greedy, se = self._memo[(key, greedy)]
            return value, is_greedy, {**line, "value": value, "se": se, "forwards": 0,
                                      "seconds": 0.0, "reused": True}
        if self.mode == "ar":
            value, is_greedy = self._ar(ctx, cont)
            se, forwards = 0.0, 1
        else:
            gen = torch.Generator().manual_seed(seed_of("duet-elbo", self.session.cfg.seed, key))
            est = self.elbo.estimate(ctx + cont, len(ctx), gen)
            value, se, forwards, is_greedy = est.value, est.se, est.forwards, False
            if greedy and self.greedy_check:
                is_greedy, extra = self._greedy(ctx, cont)
                forwards += extra
        self._memo[(key, greedy)] = (value, is_greedy, se)
        return value, is_greedy, {**line, "value": value, "se": se, "forwards": forwards,
                                  "seconds": time.perf_counter() - t0}

    def _ar(self, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
        x = torch.tensor([ctx + cont], dtype=torch.long)
        rows = self.session.ar.log_probs(x)[0, len(ctx):].double().cpu()
        target = x[0, len(ctx):]
        value = float(rows.gather(-1, target[:, None]).sum())
        return value, bool((rows.argmax(-1) == target).all())

    def _greedy(self, ctx: list[int], cont: list[int]) -> tuple[bool, int]:
        """Whether the denoiser's greedy decode (the most confident argmax committed, one
        position per forward, as in LLaDA's evaluation) writes ``cont``; it stops at the first
        wrong commit. Returns (match, forwards)."""
        s = self.session
        device = model_device(s.denoiser)
        x = torch.tensor([ctx + [s.mask_id] * len(cont)], dtype=torch.long, device=device)
        target = torch.tensor(cont, dtype=torch.long, device=device)
        floor = torch.tensor(-torch.inf, device=device)
        for k in range(len(cont)):
            masked = x[0] == s.mask_id
            t = self.elbo.schedule.time_at(1.0 - float(masked.sum()) / max(1, len(cont)))
            with torch.inference_mode():
                lp = s.denoiser.log_probs(x, torch.tensor([float(t)], device=device))[0]
            conf, arg = lp.max(-1)
            pos = int(torch.where(masked, conf, floor).argmax())
            if int(arg[pos]) != int(target[pos - len(ctx)]):
                return False, k + 1
            x[0, pos] = arg[pos]
        return True, len(cont)
