"""Duet as an lm-evaluation-harness model: ``duet``, any denoiser x guide x strategy.

    python -m experiments.lm_eval_model --model duet \\
        --model_args guide=dcd,strategy=left_to_right,steps=64 --tasks gsm8k --batch_size 8
    lm_eval.simple_evaluate(model="duet", model_args={"guide": "dcd", "steps": 64}, ...)
    python -m experiments.run task=lm_eval lm_eval.tasks=[gsm8k] steps=[64]   # Hydra

``--model_args`` are Duet overrides (the words of ``python -m experiments.run``; lm-eval
splits on commas, so a list goes through ``overrides="steps=[64] ..."``, space-separated)
plus this model's own arguments below. Plain ``lm_eval`` does not import third-party
models: ``python -m experiments.lm_eval_model`` is lm-eval's command line with ``duet``
registered (or import this module before ``simple_evaluate``).

* ``generate_until`` decodes with the configured sampler: the prompt is clamped, the canvas
  is prompt + ``max_gen_toks`` masked positions, the output stops at the first EOS id and
  the first of the task's stop strings. The sampler's own ``temperature``/``top_p`` apply;
  the task's ``do_sample``/``temperature`` are not (a DLM sampler is the method measured).
* ``loglikelihood``/``loglikelihood_rolling``: the denoiser's ELBO (``experiments.elbo``,
  ``mc_samples`` masked copies, LLaDA's scheme by default) or, with ``loglikelihood=ar``,
  the AR model's exact log-likelihood. Neither depends on the guide, strategy or steps.
  ``loglikelihood=none`` makes the configuration sampler-only: such tasks are refused.
* Models load on the first request, after every request has been checked: a too-long
  ``max_gen_toks``, a chat template the tokenizer lacks, a loglikelihood task with a
  sampler-only configuration, a step count the strategy refuses, all fail first.
* ``request_log``: a JSONL file with one line per request (forwards, tokens, seconds).
"""

from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm

try:
    import lm_eval.models  # noqa: F401  (lm-eval's own models stay registered beside ours)
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as _err:  # the optional extra
    raise ImportError('the lm-eval model needs lm-evaluation-harness: pip install '
                      '"duet-dlm[eval]" (or pip install lm-eval)') from _err

from experiments.config import ConfigError
from experiments.elbo import SCHEMES
from experiments.lm_eval_requests import (
    GenJob,
    RequestLog,
    batches,
    cut,
    encode,
    encode_pair,
    request_key,
    rolling_windows,
    seed_of,
)
from experiments.lm_eval_scoring import Scorer, model_device
from experiments.lm_eval_session import EvalSession, compose_run_config, override_words

log = logging.getLogger(__name__)
LOGLIKELIHOOD = ("elbo", "ar", "none")
PADDING = ("none", "canvas")
IGNORED_GEN_KWARGS = ("do_sample", "temperature", "top_p", "top_k")


@register_model("duet")
class DuetLM(LM):
    """lm-eval's ``LM`` over a Duet sampler.

    Args:
        overrides: extra Duet overrides, a space-separated string or a list.
        steps: denoising steps per generation (else the config's ``steps``, one entry).
        batch_size: generation rows per batch (lm-eval's ``--batch_size``; else the config's).
        loglikelihood: ``elbo`` (the denoiser's), ``ar`` (the AR model's) or ``none``.
        mc_samples, mc_batch_size, elbo_scheme, stratified: the ELBO estimator's
            (``experiments.elbo.ELBO``).
        greedy_check: compute ``is_greedy`` of loglikelihood requests under the ELBO by the
            denoiser's one-token-per-step greedy decode (costly); False returns False.
        max_gen_toks: overrides every task's ``max_gen_toks``; ``default_max_gen_toks`` is
            used when a task gives none (lm-eval's default, 256).
        padding: ``none`` (batch rows of equal prompt length only) or ``canvas``
            (``experiments.lm_eval_requests.batches``).
        add_bos_token: prepend the tokenizer's BOS id to every prompt.
        request_log: path of the per-request JSONL log (None: kept in memory only).
        config, choices: an already composed run config (the Hydra front end's).
        **duet: any other model arg is a Duet override (``guide=dcd``, ``strategy.eta=0.02``).
    """

    def __init__(self, overrides=None, steps=None, batch_size=None, max_batch_size=None,
                 device=None, loglikelihood: str = "elbo", mc_samples: int = 128,
                 mc_batch_size: int = 32, elbo_scheme: str = "count", stratified: bool = False,
                 greedy_check: bool = False, max_gen_toks=None, default_max_gen_toks: int = 256,
                 padding: str = "none", add_bos_token: bool = False, request_log=None,
                 config=None, choices=None, **duet):
        super().__init__()
        words = overrides.split() if isinstance(overrides, str) else list(overrides or [])
        words += override_words(duet)
        if device is not None and str(device).startswith("cuda") \
                and not torch.cuda.is_available():  # lm-eval's command line says cuda by default
            log.warning("device=%s requested, but CUDA is not available: the config's device "
                        "is used", device)
        elif device is not None:
            words.append(f"device={device}")
        if isinstance(batch_size, str) and not batch_size.isdigit():
            log.warning("batch_size=%s: Duet batches a fixed number of rows; using the "
                        "config's batch_size", batch_size)
            batch_size = None
        if batch_size is not None:
            words.append(f"batch_size={int(batch_size)}")
        if config is None:
            config, choices = compose_run_config(words)
        elif words:
            raise ConfigError("give either a composed config or overrides, not both")
        if loglikelihood not in LOGLIKELIHOOD:
            raise ConfigError(f"loglikelihood must be one of {', '.join(LOGLIKELIHOOD)}, "
                              f"got {loglikelihood!r}")
        if padding not in PADDING:
            raise ConfigError(f"padding must be one of {', '.join(PADDING)}, got {padding!r}")
        if elbo_scheme not in SCHEMES:
            raise ConfigError(f"elbo_scheme must be one of {', '.join(SCHEMES)}, "
                              f"got {elbo_scheme!r}")
        for name, value in (("mc_samples", mc_samples), ("mc_batch_size", mc_batch_size),
                            ("default_max_gen_toks", default_max_gen_toks)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        self.session = EvalSession(config, choices)
        self.num_steps = self._steps(steps, config)
        self.ll_mode, self.padding, self.add_bos = loglikelihood, padding, bool(add_bos_token)
        self.mc = dict(num_samples=mc_samples, batch_size=mc_batch_size, scheme=elbo_scheme,
                       stratified=bool(stratified))
        self.scorer = Scorer(self.session, loglikelihood, self.mc, greedy_check)
        self.max_gen_override = None if max_gen_toks is None else int(max_gen_toks)
        self.default_max_gen_toks = default_max_gen_toks
        self.log = RequestLog(request_log)
        self._warned: set[str] = set()

    @staticmethod
    def _steps(steps, cfg) -> int:
        if steps is None:
            if len(cfg.steps) != 1:
                raise ConfigError(f"give one step count (steps=64); the config lists "
                                  f"{list(cfg.steps)}")
            steps = cfg.steps[0]
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ConfigError(f"steps must be a positive integer, got {steps!r}")
        return steps

    # ----- what lm-eval asks besides requests ---------------------------------------------
    @property
    def tokenizer(self):
        return self.session.require_tokenizer()

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "duet")).replace("/", "__")

    def _require_template(self):
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            raise ConfigError(f"a chat template was requested, but the tokenizer of denoiser="
                              f"{self.session.name_of('denoiser')} has none (drop "
                              "--apply_chat_template / lm_eval.apply_chat_template)")
        return tok

    def chat_template(self, chat_template=False) -> str | None:
        return self._require_template().chat_template if chat_template else None

    def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
        return self._require_template().apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt)

    def get_model_info(self) -> dict:
        return {"duet": self.settings()}

    def settings(self) -> dict:
        """The sampler's and the scorer's settings, as recorded with every result."""
        return {"num_steps": self.num_steps, "batch_size": int(self.session.cfg.batch_size),
                "seed": int(self.session.cfg.seed), **self.session.sampler_settings(),
                "loglikelihood": self.ll_mode, "mc_samples": self.mc["num_samples"],
                "elbo_scheme": self.mc["scheme"], "stratified": self.mc["stratified"],
                "padding": self.padding, "max_gen_toks": self.max_gen_override}

    def _once(self, key: str, message: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    # ----- generate_until ------------------------------------------------------------------
    def _prompt_ids(self, text: str) -> list[int]:
        ids = encode(self.tokenizer, text)
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if self.add_bos and bos is not None:
            ids = [bos, *ids]
        return ids

    def _job(self, index: int, req) -> GenJob:
        context, kwargs = req.args[0], dict(req.args[1] or {})
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        gen = self.max_gen_override or kwargs.pop("max_gen_toks", None) \
            or self.default_max_gen_toks
        kwargs.pop("max_gen_toks", None)
        ignored = sorted(k for k in kwargs if k in IGNORED_GEN_KWARGS)
        if ignored:
            self._once("sampling", "the task's %s do not apply: the sampler's temperature=%s "
                       "and top_p=%s do", ignored, self.session.cfg.temperature,
                       self.session.cfg.top_p)
        max_len = self.session.max_length
        if max_len is not None and int(gen) >= max_len:
            raise ConfigError(f"max_gen_toks {gen} (task {req.task_name}) leaves no room for "
                              f"a prompt in the {max_len}-token context of denoiser="
                              f"{self.session.name_of('denoiser')}; set max_gen_toks below it")
        ids = self._prompt_ids(context)
        room = len(ids) if max_len is None else max_len - int(gen)
        return GenJob(index, req.args, request_key("generate_until", req.args), ids[-room:]
                      if room < len(ids) else ids, int(gen), until, req.task_name,
                      req.doc_id, max(0, len(ids) - room))

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        s = self.session
        jobs = [self._job(i, r) for i, r in enumerate(requests)]
        plan = batches(jobs, int(s.cfg.batch_size), self.padding)
        for batch in plan:  # every canvas checked before any model loads
            s.check_canvas(self.num_steps, max(len(j.prompt) for j in batch)
                           + batch[0].max_gen_toks)
        if any(j.truncated for j in jobs):
            self._once("truncated", "%d prompts were cut on the left to fit the context",
                       sum(bool(j.truncated) for j in jobs))
        out: list[str | None] = [None] * len(jobs)
        bar = tqdm(total=len(jobs), desc=f"duet generate_until ({self.num_steps} steps)",
                   disable=disable_tqdm)
        for batch in plan:
            texts = self._generate(batch)
            bar.update(len(batch))
            for job, text in zip(batch, texts):
                out[job.index] = text
                self.cache_hook.add_partial("generate_until", job.args, text)
        bar.close()
        return out

    def _generate(self, batch: list[GenJob]) -> list[str]:
        s, coord = self.session, self.session.coordinator
        mask, gen_len = s.mask_id, batch[0].max_gen_toks
        length = max(len(j.prompt) for j in batch) + gen_len
        rows = torch.full((len(batch), length), mask, dtype=torch.long)
        for r, job in enumerate(batch):
            rows[r, : len(job.prompt)] = torch.tensor(job.prompt, dtype=torch.long)
        device = model_device(s.denoiser)
        seed = seed_of("duet-lm-eval", s.cfg.seed, self.num_steps, *(j.key for j in batch))
        res = coord.generate(len(batch), length, self.num_steps, prompt=rows,
                             generator=torch.Generator(device).manual_seed(seed))
        eos = s.eos_id
        texts, lines = [], []
        used = res.steps_per_sample.tolist() if res.steps_per_sample is not None else None
        for r, job in enumerate(batch):
            start = len(job.prompt)
            ids = res.tokens[r, start : start + gen_len].tolist()
            text, kept, reason = cut(s.tokenizer, ids, job.until, eos)
            texts.append(text)
            lines.append({"kind": "generate_until", "num_steps": self.num_steps,
                          "key": job.key, "task": job.task, "doc_id": job.doc_id,
                          "prompt_tokens": start, "truncated": job.truncated,
                          "canvas_tokens": length - start, "max_gen_toks": gen_len,
                          "tokens": kept, "stop": reason, "text": text,
                          "raw": s.tokenizer.decode(ids, skip_special_tokens=False),
                          "nfe_denoiser": res.nfe["denoiser"], "nfe_ar": res.nfe["ar_forwards"],
                          "ar_tokens": res.nfe["ar_tokens"], "batch_size": len(batch),
                          "batch_seconds": res.seconds, "seconds": res.seconds / len(batch),
                          "steps_used": None if used is None else used[r]})
        self.log.add(lines)
        return texts

    # ----- loglikelihood ---------------------------------------------------------------------
    def _check_scoring(self, requests) -> None:
        if requests:
            self.scorer.check(sorted({str(r.task_name) for r in requests}))
            self.session.require_tokenizer()

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        self._check_scoring(requests)
        pairs = []
        for req in requests:
            ctx, cont = encode_pair(self.tokenizer, *req.args)
            bos = getattr(self.tokenizer, "bos_token_id", None)
            if self.add_bos and bos is not None:
                ctx = [bos, *ctx]
            pairs.append((req, ctx, cont))
        max_len = self.scorer.max_length
        out = []
        for req, ctx, cont in pairs:
            if max_len is not None and len(cont) > max_len:
                raise ConfigError(f"a continuation of {len(cont)} tokens (task {req.task_name})"
                                  f" exceeds the scorer's {max_len}-token context")
            if max_len is not None:
                ctx = ctx[max(0, len(ctx) + len(cont) - max_len):]
            value, greedy, line = self.scorer.score(
                ctx, cont, request_key("loglikelihood", req.args), num_steps=self.num_steps)
            self.log.add([{**line, "kind": "loglikelihood", "task": req.task_name,
                           "doc_id": req.doc_id}])
            out.append((value, greedy))
            self.cache_hook.add_partial("loglikelihood", req.args, (value, greedy))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        self._check_scoring(requests)
        max_len = self.scorer.max_length or 1024
        out = []
        for req in requests:
            ids = self._prompt_ids(req.args[0])
            key = request_key("loglikelihood_rolling", req.args)
            total, var, lines = 0.0, 0.0, []
            for w, (ctx, cont) in enumerate(rolling_windows(ids, max_len)):
                value, _, line = self.scorer.score(ctx, cont, f"{key}/{w}", greedy=False,
                                                   num_steps=self.num_steps)
                total, var = total + value, var + (line.get("se") or 0.0) ** 2
                lines.append(line)
            self.log.add([{"kind": "loglikelihood_rolling", "task": req.task_name,
                           "doc_id": req.doc_id, "key": key, "value": total, "se": var ** 0.5,
                           "windows": len(lines), "tokens": len(ids),
                           "forwards": sum(x["forwards"] for x in lines),
                           "seconds": sum(x["seconds"] for x in lines)}])
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return out


def main() -> None:
    """lm-eval's command line with the ``duet`` model registered."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
