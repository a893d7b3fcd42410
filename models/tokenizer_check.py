"""The check that a denoiser and an AR model speak the same token ids.

``decoding.protocols.check_vocabularies`` compares sizes only; this compares the tokenizers on
probe strings, which is what catches two vocabularies of equal size with different ids.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["DEFAULT_PROBES", "check_shared_tokenizer"]

DEFAULT_PROBES = (
    "Hello, world!",
    " The quick brown fox jumps over the lazy dog.",
    "In 1998, 42% of the $3.50 fees were paid.",
    "naïve café — déjà vu",
    "def f(x):\n    return x ** 2\n",
)


def real_tokens(tokenizer: Any, default: int) -> int:
    """Ids a tokenizer gives real tokens: all but a mask token listed last (diffusion-style)."""
    if tokenizer is None:
        return default
    n = len(tokenizer)
    return n - 1 if getattr(tokenizer, "mask_token_id", None) == n - 1 else n


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def check_shared_tokenizer(denoiser: Any, ar: Any, probes: Any = None) -> None:
    """Fail loudly unless the denoiser and the AR model speak the same token ids.

    Checks, in order: the denoiser's mask id lies outside the AR vocabulary; equal vocabulary
    sizes; when both carry tokenizers, identical ids on every probe string and the same EOS.

    Raises:
        ValueError: saying what differs.
    """
    mask_id, v_dlm, v_ar = int(denoiser.mask_id), int(denoiser.vocab_size), int(ar.vocab_size)
    ar_tok = getattr(ar, "tokenizer", None)
    dlm_tok = getattr(denoiser, "tokenizer", None)
    if 0 <= mask_id < v_ar:
        raise ValueError(
            f"the denoiser's mask id {mask_id} lies inside the AR vocabulary [0, {v_ar}): the AR "
            "model would treat MASK as a real token"
        )
    if ar_tok is not None and mask_id < real_tokens(ar_tok, len(ar_tok)):
        raise ValueError(
            f"the denoiser's mask id {mask_id} is a real token of the AR tokenizer "
            f"({len(ar_tok)} tokens)"
        )
    if v_dlm != v_ar:
        raise ValueError(f"vocabulary sizes differ: denoiser {v_dlm} tokens, AR model {v_ar}")
    if dlm_tok is None or ar_tok is None:
        missing = "denoiser" if dlm_tok is None else "AR model"
        warnings.warn(
            f"the {missing} has no tokenizer: token ids on probe strings were not "
            "compared, only vocabulary sizes and the mask id",
            stacklevel=2,
        )
        return
    diffs = []
    for text in DEFAULT_PROBES if probes is None else probes:
        a, b = _encode(dlm_tok, text), _encode(ar_tok, text)
        if a != b:
            diffs.append(f"{text!r}: denoiser {a[:16]} vs AR {b[:16]}")
    eos_a, eos_b = dlm_tok.eos_token_id, ar_tok.eos_token_id
    if eos_a != eos_b:
        diffs.append(f"EOS id: denoiser {eos_a} vs AR {eos_b}")
    if diffs:
        raise ValueError("the denoiser and AR tokenizers disagree: " + "; ".join(diffs))
