"""Byte-level BPE tokenizer for the tiny models, and its checks.

Layout of the ids (the engine relies on it):

* ``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2, trained first so they keep these ids;
* the BPE vocabulary fills ``3 .. V-1``;
* ``<mask>`` is added last, so ``mask_id == V`` lies outside the real (AR) vocabulary ``0..V-1``
  and the total number of ids is ``V + 1``.

The tokenizer is saved as a ``transformers.PreTrainedTokenizerFast`` folder so that any model
folder can ship its own copy and load on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, MASK = "<pad>", "<bos>", "<eos>", "<mask>"
SPECIALS = (PAD, BOS, EOS)


@dataclass(frozen=True)
class VocabInfo:
    """The ids a model needs from its tokenizer.

    Attributes:
        vocab_size: V, number of real tokens (ids ``0..V-1``), what an AR model predicts.
        mask_id: id of ``<mask>`` (== V): the denoiser's extra input state.
        bos_id, eos_id, pad_id: special ids inside the real vocabulary.
    """

    vocab_size: int
    mask_id: int
    bos_id: int
    eos_id: int
    pad_id: int


def train_tokenizer(texts: Iterable[str], total_ids: int = 4096) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE with ``total_ids`` ids in all (mask included).

    Args:
        texts: training documents (one string each).
        total_ids: size of the whole id space; V = total_ids - 1 real tokens.

    Returns:
        A fast tokenizer with bos/eos/pad/mask tokens set; it adds no special tokens by itself
        (callers place BOS/EOS explicitly, so token streams stay plain).
    """
    if total_ids < 256 + len(SPECIALS) + 1:
        raise ValueError(f"total_ids={total_ids} is smaller than the byte alphabet plus specials")
    tok = Tokenizer(models.BPE())
    # No prefix space: windows cut mid-text must round-trip byte-exactly.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=total_ids - 1,  # one id kept free for <mask>, appended after training
        min_frequency=2,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    tok.add_special_tokens([MASK])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, mask_token=MASK
    )
    vocab_info(fast)  # fail now rather than at load time if the layout came out wrong
    return fast


def vocab_info(tokenizer: PreTrainedTokenizerFast) -> VocabInfo:
    """Read and check the id layout: specials first, ``<mask>`` last and outside 0..V-1."""
    total = len(tokenizer)
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in (PAD, BOS, EOS, MASK)}
    if [ids[s] for s in SPECIALS] != [0, 1, 2]:
        raise ValueError(f"expected <pad>,<bos>,<eos> at ids 0,1,2, got {ids}")
    if ids[MASK] != total - 1:
        raise ValueError(f"<mask> must be the last id ({total - 1}), got {ids[MASK]}")
    if tokenizer.mask_token_id != ids[MASK] or tokenizer.bos_token_id != ids[BOS]:
        raise ValueError("tokenizer special-token attributes disagree with the vocabulary")
    return VocabInfo(
        vocab_size=total - 1, mask_id=ids[MASK], bos_id=ids[BOS], eos_id=ids[EOS], pad_id=ids[PAD]
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: str | Path) -> Path:
    """Write the tokenizer folder (``tokenizer.json`` + configs); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    return folder


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerFast:
    """Load a saved tokenizer folder and check its id layout (see :func:`vocab_info`)."""
    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {folder}")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder))
    vocab_info(tokenizer)
    return tokenizer
