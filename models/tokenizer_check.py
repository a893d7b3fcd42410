"""The check that a denoiser and an AR model speak the same token ids.

``decoding.protocols.check_vocabularies`` compares the engine's sizes only; this compares the
tokenizers themselves, id by id and on probe strings, which is what catches two vocabularies of
equal size with different ids, and lets two of different sizes pair on what they share.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["DEFAULT_PROBES", "check_shared_tokenizer", "first_differing_id", "raw_tokenizer",
           "tokenizer_differences"]

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


def raw_tokenizer(model: Any) -> Any:
    """The model's transformers tokenizer in its own ids (unwrapping ``models.vocab``'s view)."""
    tok = getattr(model, "tokenizer", None)
    return getattr(tok, "tokenizer", tok) if type(tok).__name__ == "EngineTokenizer" else tok


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def first_differing_id(a: Any, b: Any) -> tuple[int, str, str] | None:
    """The first id that both tokenizers define with different tokens, or None."""
    n = min(len(a), len(b))
    ta, tb = a.convert_ids_to_tokens(list(range(n))), b.convert_ids_to_tokens(list(range(n)))
    for i, (x, y) in enumerate(zip(ta, tb)):
        if x != y:
            return i, x, y
    return None


def check_shared_tokenizer(denoiser: Any, ar: Any, probes: Any = None) -> None:
    """Fail loudly unless the denoiser and the AR model speak the same token ids.

    With both tokenizers: every id that both define must be the same token (so embedding
    sizes may differ: Dream's 152064 rows pair with Qwen2.5's 151936, while Qwen3, whose
    151665 and 151666 are other tokens, is refused at the first differing id); the probe
    strings must encode to the same ids; EOS must be the same id. ``models.pairing`` then puts
    both models on their common real ids. Without a tokenizer on either side only the engine's
    sizes can be compared: equal vocabularies, and the mask id outside the AR's.

    Raises:
        ValueError: saying what differs.
    """
    dlm_tok, ar_tok = raw_tokenizer(denoiser), raw_tokenizer(ar)
    if dlm_tok is None or ar_tok is None:
        _check_sizes(denoiser, ar)
        missing = "denoiser" if dlm_tok is None else "AR model"
        warnings.warn(
            f"the {missing} has no tokenizer: token ids on probe strings were not "
            "compared, only vocabulary sizes and the mask id",
            stacklevel=2,
        )
        return
    diffs = tokenizer_differences(dlm_tok, ar_tok, probes)
    if diffs:
        raise ValueError("the denoiser and AR tokenizers disagree: " + "; ".join(diffs))


def tokenizer_differences(dlm_tok: Any, ar_tok: Any, probes: Any = None) -> list[str]:
    """What differs between two tokenizers: the first id both define differently, probe
    strings encoded differently, the EOS id. Empty when they pair."""
    diffs = []
    first = first_differing_id(dlm_tok, ar_tok)
    if first is not None:
        i, x, y = first
        diffs.append(f"id {i} is {x!r} for the denoiser but {y!r} for the AR model")
    for text in DEFAULT_PROBES if probes is None else probes:
        a, b = _encode(dlm_tok, text), _encode(ar_tok, text)
        if a != b:
            diffs.append(f"{text!r}: denoiser {a[:16]} vs AR {b[:16]}")
    eos_a, eos_b = dlm_tok.eos_token_id, ar_tok.eos_token_id
    if eos_a != eos_b:
        diffs.append(f"EOS id: denoiser {eos_a} vs AR {eos_b}")
    return diffs


def _check_sizes(denoiser: Any, ar: Any) -> None:
    mask_id, v_dlm, v_ar = int(denoiser.mask_id), int(denoiser.vocab_size), int(ar.vocab_size)
    if 0 <= mask_id < v_ar:
        raise ValueError(
            f"the denoiser's mask id {mask_id} lies inside the AR vocabulary [0, {v_ar}): the AR "
            "model would treat MASK as a real token"
        )
    if v_dlm != v_ar:
        raise ValueError(f"vocabulary sizes differ: denoiser {v_dlm} tokens, AR model {v_ar}")
