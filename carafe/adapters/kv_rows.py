"""One request's keys and values for the native forward pass: a buffer of its own.

Each row (request) owns ``(layers, 2, kv_heads, capacity, head_dim)`` in fp16, holding
only its own tokens: no padding to a batch's longest row, a row that finishes frees its
buffer without touching the others, and a pass reads half the bytes of fp32 (decoding
long contexts is bound by reading them; llama.cpp and vLLM keep fp16 caches too).
Values sit one column after another; keys in blocks of 16 columns, each block
``(head_dim, 16)``, so that the native pass computes 16 scores with plain vector
multiply-adds (``carafe/adapters/csrc/attention.h``).

A prefix-cache entry is a :meth:`RowKV.snapshot` of a prompt's columns; a hit starts a
new row from it (:meth:`RowKV.from_snapshot`).
"""

from __future__ import annotations

import torch

BLOCK = 16  # key columns per block; capacities are multiples of it
_SPARE = 64  # columns allocated ahead; a full buffer grows by half (at least this)


def _ceil(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def _copy_columns(src: torch.Tensor, dst: torch.Tensor, n: int) -> None:
    """``dst``'s first ``n`` columns <- ``src``'s (buffers of any capacities): the keys as whole blocks of
    16 columns, each (head_dim, 16), one piece per layer and kv head; the values column by column."""
    layers, _, kv_heads, _, head_dim = src.shape
    keys = _ceil(n) * head_dim
    dst[:, 0].view(layers, kv_heads, -1)[:, :, :keys] = src[:, 0].reshape(layers, kv_heads, -1)[:, :, :keys]
    dst[:, 1, :, :n] = src[:, 1, :, :n]


class RowKV:
    """One row's fp16 KV buffer; its columns ``[0, length)`` are its tokens so far."""

    __slots__ = ("buffer", "length")

    def __init__(self, layers: int, kv_heads: int, head_dim: int, capacity: int = 0) -> None:
        self.buffer = torch.empty((layers, 2, kv_heads, _ceil(capacity + _SPARE), head_dim), dtype=torch.float16)
        self.length = 0

    @property
    def capacity(self) -> int:
        return int(self.buffer.shape[3])

    @property
    def nbytes(self) -> int:
        return self.buffer.numel() * self.buffer.element_size()

    def reserve(self, n: int) -> None:
        """Room for ``n`` more columns (the native pass writes them in place)."""
        if self.length + n <= self.capacity:
            return
        layers, _, kv_heads, _, head_dim = self.buffer.shape
        grown = torch.empty(
            (layers, 2, kv_heads, _ceil(self.length + n + max(_SPARE, self.length // 2)), head_dim), dtype=torch.float16
        )
        _copy_columns(self.buffer, grown, self.length)
        self.buffer = grown

    def snapshot(self, n: int) -> torch.Tensor:
        """A copy of the first ``n`` columns (a prefix-cache entry)."""
        assert n <= self.length
        return self.buffer[:, :, :, : _ceil(n)].clone()

    @classmethod
    def from_snapshot(cls, snapshot: torch.Tensor, n: int, capacity: int) -> RowKV:
        """A row whose first ``n`` columns are those of ``snapshot`` (room for ``capacity`` columns)."""
        layers, _, kv_heads, _, head_dim = snapshot.shape
        row = cls(layers, kv_heads, head_dim, max(capacity, n))
        _copy_columns(snapshot, row.buffer, n)
        row.length = n
        return row

    def keys(self, layer: int) -> torch.Tensor:
        """Layer ``layer``'s keys as (kv_heads, length, head_dim) fp16 (tests)."""
        _, _, kv_heads, capacity, head_dim = self.buffer.shape
        blocks = self.buffer[layer, 0].reshape(kv_heads, capacity // BLOCK, head_dim, BLOCK)
        return blocks.transpose(2, 3).reshape(kv_heads, capacity, head_dim)[:, : self.length]

    def values(self, layer: int) -> torch.Tensor:
        return self.buffer[layer, 1, :, : self.length]
