"""Packed weights for the fast path: a base model's Linear layers in bf16 or int8.

Single-stream decoding of a small model on a CPU is bound by memory bandwidth: every
token reads every weight once. ``int8`` keeps one signed byte per weight and one bf16
scale per output channel (symmetric, per channel: ``w ≈ q · s``), a quarter of fp32's
bytes; ``bf16`` halves them. Activations go in as bf16. Decode steps (one token per
row, up to ``_GEMV_ROWS`` rows) run through ``aten._weight_int8pack_mm``, a fused
int8-weight GEMV that reads the int8 bytes only; prefills, which are compute bound and
for which that kernel scales badly with rows, run a bf16 GEMM on ``q · s`` kept in bf16
(the same weights, so prefill and decode agree; 405 MB in all for SmolLM2, vs 540 MB
fp32), one GEMM per row: oneDNN rounds differently for different row counts, and a
request's tokens should not depend on who else is prefilled with it.
LoRA deltas stay fp32 and are added on top by the caller.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Quantize = Literal["none", "bf16", "int8"]
# up to this many rows the int8 GEMV kernel wins; above it a dequantised bf16 GEMM does
_GEMV_ROWS = 16


class PackedLinear:
    """``y = x @ W.T`` for a weight stored as fp32, bf16 or int8 + per-channel scales."""

    __slots__ = ("_dense", "in_features", "mode", "out_features", "scales", "weight")

    def __init__(self, weight: torch.Tensor, mode: Quantize) -> None:
        weight = weight.detach().float()
        self.mode = mode
        self.out_features, self.in_features = weight.shape
        self.scales: torch.Tensor | None = None
        if mode == "int8":
            scales = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0
            self.weight = (weight / scales[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous()
            self.scales = scales.to(torch.bfloat16)
            self._dense = self.weight * self.scales[:, None]
        elif mode == "bf16":
            self.weight = weight.to(torch.bfloat16).contiguous()
        else:
            self.weight = weight.contiguous()
        if mode != "int8":
            self._dense = self.weight

    @property
    def nbytes(self) -> int:
        extra = 0
        if self.scales is not None:
            extra = self.scales.numel() * self.scales.element_size() + self._dense.numel() * self._dense.element_size()
        return self.weight.numel() * self.weight.element_size() + extra

    def dense(self) -> torch.Tensor:
        """The weight as a float tensor (bf16 for packed modes)."""
        return self._dense

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (rows, seq, in_features) fp32 -> (rows, seq, out_features) fp32."""
        if self.mode == "none":
            return F.linear(x, self.weight)
        shape = x.shape
        flat = x.reshape(-1, shape[-1]).to(torch.bfloat16)
        if self.scales is not None and x.dim() == 3 and shape[1] == 1 and shape[0] <= _GEMV_ROWS:
            out = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scales)
        elif x.dim() == 3 and shape[0] > 1 and shape[1] > 1:
            # one GEMM per row: a row's result never depends on how many others share the batch
            out = torch.cat([F.linear(row, self._dense) for row in flat.view(shape[0], shape[1], -1)])
        else:
            out = F.linear(flat, self._dense)
        return out.float().reshape(*shape[:-1], self.out_features)  # type: ignore[no-any-return]  # torch/transformers typing

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` of the weight as fp32 (an embedding lookup on a tied table)."""
        picked = self.weight[ids].float()
        if self.scales is not None:
            picked = picked * self.scales[ids].float().unsqueeze(-1)
        return picked
