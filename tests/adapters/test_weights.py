"""Reading a model's tensors one at a time for the fast path, and where the fast path runs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from carafe.adapters.config import EngineConfig
from carafe.adapters.errors import ModelNotAvailable
from carafe.adapters.local import LocalEngine
from carafe.adapters.weights import TensorFiles


def test_tensor_files_read_each_tensor_as_saved(tmp_path):
    saved = {"a.weight": torch.randn(3, 4), "b.weight": torch.randn(5).to(torch.bfloat16)}
    save_file(saved, str(tmp_path / "model.safetensors"))
    files = TensorFiles(tmp_path)
    assert "a.weight" in files and "c.weight" not in files
    assert torch.equal(files["a.weight"], saved["a.weight"])
    assert files["b.weight"].dtype == torch.bfloat16 and torch.equal(files["b.weight"], saved["b.weight"])


def test_truncated_or_missing_weights_are_a_clear_error(tmp_path):
    with pytest.raises(ModelNotAvailable, match="no model weights"):
        TensorFiles(tmp_path)
    save_file({"a.weight": torch.randn(64, 64)}, str(tmp_path / "model.safetensors"))
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelNotAvailable, match="truncated"):
        TensorFiles(tmp_path)


def test_fast_path_on_a_named_gpu_is_refused_and_auto_picks_the_cpu(tmp_path):
    with pytest.raises(ModelNotAvailable, match="CPU fast path"):
        LocalEngine(EngineConfig(device="cuda", quantize="int4"), models_dir=tmp_path)
    assert LocalEngine(EngineConfig(device="auto", quantize="int4"), models_dir=tmp_path).device.type == "cpu"
