"""LoRA adapters for the fast decoder: loaded from PEFT folders, applied per row.

Each adapter is a map ``(layer, module) -> (A, B·scaling)`` in fp32. A forward pass
gets one adapter name per row. A prefill pass adds each adapter's delta to its own
rows (one ``bmm`` pair per adapter present, on that adapter's weights as loaded: no
copies). A decode step of the Python decoder stacks the adapters present once per set
of names (rank-padded with zeros, slot 0 = the base model) and every row gathers its
own pair: two ``bmm`` per module whatever the mix, the CPU-side BGMV that
:mod:`carafe.adapters.gathered` does for PEFT. The native decode step keeps its own
references to each adapter's weights (:meth:`LoraSet.ids` names them) and needs no stack.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from carafe.adapters.errors import InvalidAdapter
from carafe.adapters.peft_check import CONFIG_FILE, WEIGHTS_FILE

BASE = "__base__"
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
Target = tuple[int, str]  # (layer index, module name)


@dataclass(slots=True)
class LoraWeights:
    """One adapter: fp32 ``A`` (in, r) and ``B·scaling`` (r, out) per targeted module."""

    pairs: dict[Target, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


def _alpha_for(name: str, config: dict[str, Any], rank: int) -> float:
    alpha = float(config.get("lora_alpha") or rank)
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if name == pattern or name.endswith("." + pattern):
            alpha = float(value)
    return alpha


def read_lora(folder: Path) -> LoraWeights:
    """Read a PEFT LoRA folder into fp32 pairs; InvalidAdapter for what the fast path cannot serve."""
    from safetensors.torch import load_file

    config = json.loads((folder / CONFIG_FILE).read_text())
    unsupported = [k for k in ("use_dora", "lora_bias", "modules_to_save") if config.get(k)]
    if unsupported:
        raise InvalidAdapter(
            f"{folder} uses {', '.join(unsupported)}, which the quantized fast path does not serve; "
            "set adapters.engine.quantize: none to serve it",
            param="path",
        )
    tensors = load_file(str(folder / WEIGHTS_FILE))
    weights = LoraWeights()
    for key, a in tensors.items():
        if ".lora_A." not in key:
            if ".lora_B." not in key:
                raise InvalidAdapter(
                    f"{folder}: tensor {key!r} is not a LoRA A/B weight; the quantized fast path "
                    "serves plain LoRA only (adapters.engine.quantize: none serves it)",
                    param="path",
                )
            continue
        name = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        parts = name.split(".")
        if len(parts) != 5 or parts[:2] != ["model", "layers"] or parts[4] not in MODULES:
            raise InvalidAdapter(
                f"{folder} targets {name!r}; the quantized fast path serves LoRA on the attention and "
                "MLP projections only (adapters.engine.quantize: none serves it)",
                param="path",
            )
        b = tensors.get(key.replace(".lora_A.", ".lora_B."))
        if b is None:
            raise InvalidAdapter(f"{folder}: {key} has no matching lora_B weight", param="path")
        rank = a.shape[0]
        alpha = _alpha_for(name, config, rank)
        scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        weights.pairs[(int(parts[2]), parts[4])] = (a.float().T.contiguous(), (b.float().T * scaling).contiguous())
    return weights


class LoraSet:
    """The resident adapters and the stacks of the current mix."""

    def __init__(self) -> None:
        self.adapters: dict[str, LoraWeights] = {}
        self.ids: dict[str, int] = {}  # a number per resident adapter (> 0; 0 is the base model)
        self._next_id = 1
        self._stacks: tuple[tuple[str, ...], dict[Target, tuple[torch.Tensor, torch.Tensor]]] | None = None

    def add(self, name: str, weights: LoraWeights) -> int:
        self.adapters[name] = weights
        self.ids[name] = self._next_id
        self._next_id += 1
        self._stacks = None
        return self.ids[name]

    def remove(self, name: str) -> int | None:
        self.adapters.pop(name, None)
        self._stacks = None  # no stacked copy outlives the adapter
        return self.ids.pop(name, None)

    def row_ids(self, adapter_names: list[str] | None) -> torch.Tensor | None:
        """Each row's adapter id (0: the base model), or None when no row has one (the native pass)."""
        if not self._present(adapter_names) or adapter_names is None:
            return None
        return torch.tensor([self.ids.get(n, 0) for n in adapter_names], dtype=torch.long)

    def _stacked(self, names: tuple[str, ...]) -> dict[Target, tuple[torch.Tensor, torch.Tensor]]:
        if self._stacks is not None and self._stacks[0] == names:
            return self._stacks[1]
        targets = sorted({t for n in names for t in self.adapters[n].pairs})
        stacks: dict[Target, tuple[torch.Tensor, torch.Tensor]] = {}
        for target in targets:
            pairs = [self.adapters[n].pairs.get(target) for n in names]
            first = next(p for p in pairs if p is not None)
            rank = max(p[0].shape[1] for p in pairs if p is not None)
            a = torch.zeros(len(names) + 1, first[0].shape[0], rank)
            b = torch.zeros(len(names) + 1, rank, first[1].shape[1])
            for i, p in enumerate(pairs, start=1):
                if p is not None:
                    a[i, :, : p[0].shape[1]] = p[0]
                    b[i, : p[1].shape[0], :] = p[1]
            stacks[target] = (a, b)
        self._stacks = (names, stacks)
        return stacks

    def _present(self, adapter_names: list[str] | None) -> tuple[str, ...]:
        """The adapters ``adapter_names`` uses (sorted, base left out); KeyError for one not loaded."""
        names = tuple(sorted({n for n in adapter_names or () if n != BASE}))
        missing = [n for n in names if n not in self.adapters]
        if missing:
            raise KeyError(f"adapter {missing[0]!r} is not loaded")
        return names

    def plan(self, adapter_names: list[str] | None) -> RowDeltas | None:
        """What one forward pass adds for ``adapter_names`` (None: no LoRA in this batch)."""
        names = self._present(adapter_names)
        if not names or adapter_names is None:
            return None
        slot = {n: i for i, n in enumerate(names, start=1)}
        rows = torch.tensor([slot.get(n, 0) for n in adapter_names])
        return RowDeltas(self, names, rows)


class RowDeltas:
    """The LoRA delta of each module for the rows of one batch."""

    __slots__ = ("_names", "_picked", "_rows", "_set", "_targets")

    def __init__(self, loras: LoraSet, names: tuple[str, ...], rows: torch.Tensor) -> None:
        self._set, self._names, self._rows = loras, names, rows
        self._targets = {t for n in names for t in loras.adapters[n].pairs}
        self._picked: dict[Target, tuple[torch.Tensor, torch.Tensor]] = {}

    def delta(self, target: Target, x: torch.Tensor) -> torch.Tensor | None:
        """``x`` (rows, seq, in) -> the rows' LoRA outputs (rows, seq, out), or None if nobody targets it."""
        if target not in self._targets:
            return None
        if x.shape[1] > 1:  # a prefill pass: each adapter on its own rows, one GEMM pair per row (rows never mix)
            out: torch.Tensor | None = None
            for slot, name in enumerate(self._names, start=1):
                pair = self._set.adapters[name].pairs.get(target)
                idx = (self._rows == slot).nonzero().squeeze(1)
                if pair is None or idx.numel() == 0:
                    continue
                a, b = pair
                rows = idx.numel()
                part = torch.bmm(torch.bmm(x[idx], a.expand(rows, *a.shape)), b.expand(rows, *b.shape))
                if out is None:
                    out = x.new_zeros((*x.shape[:2], b.shape[1]))
                out[idx] = part
            return out
        picked = self._picked.get(target)
        if picked is None:
            stack = self._set._stacked(self._names)[target]
            picked = self._picked[target] = (stack[0][self._rows], stack[1][self._rows])
        # a decode step: per-row sums, so a row's delta is the same in any batch (bmm's isn't)
        low = (x.transpose(1, 2) * picked[0]).sum(dim=1, keepdim=True)
        return (low.transpose(1, 2) * picked[1]).sum(dim=1, keepdim=True)
