"""The family registry: config.json decides which loader runs, before any weight is read."""

from __future__ import annotations

import json

import pytest

from models.families import detect, load_denoiser
from models.hub import CheckpointError, read_weights
from models.registry import Family, families, register


def test_unknown_model_type_is_refused_before_any_weight(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "parrot"}))
    (tmp_path / "model.safetensors").write_bytes(b"not read")
    with pytest.raises(ValueError, match=r"'model_type': 'parrot'.*Known model_type values"):
        load_denoiser(tmp_path)


def test_a_registered_family_claims_its_folders(tmp_path):
    seen = []
    fam = Family(name="test-parrot", claims=lambda cfg, files: cfg.get("model_type") == "pq",
                 load=lambda folder, cfg, **kw: seen.append((folder, kw)) or "loaded")
    register(fam)
    try:
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "pq"}))
        assert detect(tmp_path) is fam
        assert load_denoiser(tmp_path, dtype="bfloat16") == "loaded"
        assert seen == [(tmp_path, {"dtype": "bfloat16"})]
        with pytest.raises(ValueError, match="registered already"):
            register(fam)
    finally:
        from models import registry

        registry._FAMILIES.pop("test-parrot")
    assert fam not in families()


def test_a_shard_missing_from_the_index_is_named(tmp_path):
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors",
                            "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors"):
        read_weights(tmp_path)
