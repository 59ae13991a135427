"""The base model tuning trains and evaluates on: the one the engine serves
(``tuning.training.base_model``, which ``carafe tune`` takes from
``adapters.engine.model``), found and converted once by
:func:`carafe.adapters.base_model.prepare_base_model`, so an adapter's manifest
names the same base id and digest that the gateway checks it against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from carafe.adapters.base_model import SMOLLM2, BaseModelFiles, identify, pick_device, prepare_base_model
from carafe.adapters.manifest import BaseModelRef

__all__ = ["SMOLLM2", "BaseModelFiles", "base_files", "base_ref", "load_base", "pick_device"]


def base_ref(model: str = SMOLLM2) -> BaseModelRef:
    """What an adapter's manifest records of its base: id and weights digest (no conversion)."""
    model_id, digest = identify(model)
    return BaseModelRef(id=model_id, digest=digest)


def base_files(models_dir: Path, model: str = SMOLLM2) -> BaseModelFiles:
    """The converted base model folder, its id and digest."""
    return prepare_base_model(model, models_dir)


def load_base(models_dir: Path, device: Any = "cpu", model: str = SMOLLM2) -> tuple[Any, Any, str]:
    """(model, tokenizer, model id), float32, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    files = base_files(models_dir, model)
    tok = AutoTokenizer.from_pretrained(files.folder)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    loaded = AutoModelForCausalLM.from_pretrained(files.folder, dtype=torch.float32).to(device)
    loaded.eval()
    return loaded, tok, files.model_id
