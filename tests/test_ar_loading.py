"""load_ar on a GPT-2 folder with and without its tokenizer files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from models import load_ar

TINY_AR = Path(__file__).resolve().parent.parent / "models" / "tiny" / "ar"
needs_tiny = pytest.mark.skipif(not (TINY_AR / "config.json").exists(),
                                reason="the tiny AR model is not in models/tiny/ar")


@needs_tiny
def test_folder_without_tokenizer_files_runs_on_ids_with_a_warning(tmp_path):
    with_tok = load_ar(TINY_AR)
    assert with_tok.tokenizer is not None and with_tok.vocab_size > 100
    bare = tmp_path / "ar"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(TINY_AR / name, bare / name)
    # GPT-2 folders get an empty tokenizer back, Mistral-shaped ones an error: both warn.
    with pytest.warns(UserWarning, match="token ids"):
        ids_only = load_ar(bare)
    assert ids_only.tokenizer is None
    assert ids_only.vocab_size == with_tok.vocab_size and ids_only.bos_id == with_tok.bos_id
    x = torch.randint(0, with_tok.vocab_size, (2, 5), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ids_only.log_probs(x), with_tok.log_probs(x))
