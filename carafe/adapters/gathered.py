"""Mixed-adapter batches in two batched matmuls per LoRA layer (a CPU-side BGMV).

PEFT runs a batch that mixes adapters (``adapter_names=[...]``) by looping over the
distinct adapters in every LoRA layer: index the rows, two small matmuls, scatter
back. At decode time (one token per row) that loop is Python overhead, so 8 rows on
8 adapters cost far more than 8 rows on one. Here each layer stacks its adapters'
``A`` and ``B·scaling`` once per set of adapters (rank-padded with zeros), gathers
one pair per row and runs ``bmm`` twice, whatever the number of adapters — the
gather-matmul that Punica/S-LoRA kernels do on GPUs.

Only vanilla LoRA on ``nn.Linear`` layers in eval mode takes this path; anything
else (DoRA, variants, training, other layer types) falls back to PEFT's own loop.
Internal adapter names are never reused (``carafe_<n>``), so a stack keyed by names
cannot go stale; ``clear`` drops the stacks after an unload so no copy outlives it.
"""

from __future__ import annotations

import types
from typing import Any

import torch

BASE = "__base__"
_CACHE = "_carafe_gathered"


def _stacks(layer: Any, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    cached = layer.__dict__.get(_CACHE)
    if cached is not None and cached[0] == names:
        return cached[1], cached[2]
    first = layer.lora_A[names[0]].weight
    rank = max(int(layer.r[n]) for n in names)
    a = torch.zeros(len(names) + 1, first.shape[1], rank, dtype=first.dtype, device=first.device)
    b = torch.zeros(
        len(names) + 1, rank, layer.lora_B[names[0]].weight.shape[0], dtype=first.dtype, device=first.device
    )
    with torch.no_grad():
        for i, name in enumerate(names, start=1):  # row 0 stays zero: the base model
            r = int(layer.r[name])
            a[i, :, :r] = layer.lora_A[name].weight.T
            b[i, :r, :] = layer.lora_B[name].weight.T * layer.scaling[name]
    layer.__dict__[_CACHE] = (names, a, b)
    return a, b


def _gathered_forward(self: Any, x: torch.Tensor, *args: Any, adapter_names: list[str], **kwargs: Any) -> torch.Tensor:
    from peft.tuners.lora.layer import VARIANT_KWARG_KEYS

    present = tuple(sorted({n for n in adapter_names if n != BASE and n in self.lora_A}))
    if (
        self.training
        or x.dim() != 3
        or any(n in self.lora_variant for n in present)
        or any(self.use_dora.get(n, False) for n in present)
        or any(kwargs.get(k) is not None for k in VARIANT_KWARG_KEYS)
    ):
        return type(self)._mixed_batch_forward(self, x, *args, adapter_names=adapter_names, **kwargs)  # type: ignore[no-any-return]  # torch/transformers typing
    for key in VARIANT_KWARG_KEYS:  # PEFT passes them along; the base layer does not take them
        kwargs.pop(key, None)
    result = self.base_layer(x, *args, **kwargs)
    if not present:
        return result  # type: ignore[no-any-return]  # torch/transformers typing
    a, b = _stacks(self, present)
    slot = {n: i for i, n in enumerate(present, start=1)}
    rows = torch.tensor([slot.get(n, 0) for n in adapter_names], device=a.device)
    delta = torch.bmm(torch.bmm(x.to(a.dtype), a[rows]), b[rows])
    return result + delta.to(result.dtype)  # type: ignore[no-any-return]  # torch/transformers typing


def install(model: Any) -> int:
    """Route mixed-adapter batches of every LoRA Linear layer in ``model`` through the
    gathered path; idempotent (call after each adapter load). Returns the layers patched."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    patched = 0
    for module in model.modules():
        if isinstance(module, LoraLinear):
            if "_mixed_batch_forward" not in module.__dict__:
                module._mixed_batch_forward = types.MethodType(_gathered_forward, module)  # type: ignore[method-assign]  # torch/transformers typing
            module.__dict__.pop(_CACHE, None)
            patched += 1
    return patched


def clear(model: Any) -> None:
    """Drop every cached stack (after an adapter is deleted, so its copy goes too)."""
    for module in model.modules():
        module.__dict__.pop(_CACHE, None)


def uninstall(model: Any) -> None:
    """Back to PEFT's own per-adapter loop (benchmarks compare the two)."""
    clear(model)
    for module in model.modules():
        module.__dict__.pop("_mixed_batch_forward", None)
