"""What produced a result: recorded in every metrics line, reference row and results.csv row.

``provenance`` gives the project version, the git commit (when the code runs from a checkout,
with ``+dirty`` when it has uncommitted changes), torch and transformers versions, the
denoiser's device and dtype, the gen-PPL convention, the seed and the sample count.
``gen_nll_se`` is the standard error that ``frontier.png`` draws.
"""

from __future__ import annotations

import math
import subprocess
from functools import lru_cache
from importlib import metadata

import torch

from experiments.config import REPO_ROOT


@lru_cache(maxsize=1)
def software() -> dict:
    """Versions of the project and of the libraries that shape the numbers."""
    try:
        version = metadata.version("duet-dlm")
    except metadata.PackageNotFoundError:
        version = None
    import transformers

    return {"duet_version": version, "git_commit": git_commit(),
            "torch_version": torch.__version__, "transformers_version": transformers.__version__}


def git_commit() -> str | None:
    """HEAD of the checkout the code runs from (``+dirty`` with local changes), else None."""
    if not (REPO_ROOT / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def model_place(model) -> tuple[str | None, str | None]:
    """(device, dtype) of a model's first floating parameter or buffer, else of the oracle's
    tables (``model.hmm``); (None, None) when it holds no tensors."""
    tensors = []
    if isinstance(model, torch.nn.Module):
        tensors = list(model.parameters()) + list(model.buffers())
    hmm = getattr(model, "hmm", None)
    if hmm is not None:
        tensors += [getattr(hmm, "transition", None)]
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            return str(t.device), str(t.dtype).removeprefix("torch.")
    return None, None


def convention(cfg, evaluator=None) -> str | None:
    """The gen-PPL convention a run used: the evaluator's, else the config's, else None."""
    value = getattr(evaluator, "convention", None)
    if value is None and cfg is not None and "convention" in cfg:
        value = cfg.get("convention")
    return None if value is None else str(value)


def provenance(cfg, denoiser=None, evaluator=None, num_samples: int | None = None) -> dict:
    device, dtype = model_place(denoiser)
    return {**software(), "device": device or str(cfg.get("device")), "dtype": dtype,
            "convention": convention(cfg, evaluator), "seed": int(cfg.seed),
            "num_samples": num_samples}


def gen_nll_se(evaluator, tokens: torch.Tensor, prompt: torch.Tensor | None = None
               ) -> float | None:
    """Standard error of the pooled gen NLL over samples.

    Pooled NLL is a ratio (sum of NLL / sum of tokens); its standard error is the delta-method
    one, sqrt(Σ (s_j − m·n_j)² / (N (N−1))) / mean(n_j), with s_j and n_j sample j's NLL sum
    and token count. The oracle judge averages per-sample NLL/L: the plain standard error.
    """
    n = tokens.shape[0]
    if n < 2:
        return None
    hmm = getattr(evaluator, "hmm", None)
    if hmm is not None:
        per = -hmm.log_prob(tokens).double() / tokens.shape[1]
        return float(per.std() / math.sqrt(n))
    sums, counts = evaluator.nll(tokens, prompt)  # per sample, under its convention
    pairs = [(a, c) for a, c in zip(sums, counts) if c > 0]
    if len(pairs) < 2:
        return None
    sums = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
    counts = torch.tensor([p[1] for p in pairs], dtype=torch.float64)
    mean = sums.sum() / counts.sum()
    resid = sums - mean * counts
    k = len(pairs)
    return float((resid.pow(2).sum() / (k * (k - 1))).sqrt() / counts.mean())
