"""The batch KV cache of the Python fast decoder (:class:`~carafe.adapters.decoder.LlamaDecoder`
on torch's kernels, and its prefills): one tensor pair per layer, rows left-padded to a
common length, grown in place. The native path keeps one buffer per row instead
(:mod:`carafe.adapters.kv_rows`).
"""

from __future__ import annotations

import torch

_SPARE = 64  # cache columns allocated ahead, so most steps write in place
# a prefill's attention runs on queries and keys padded to this many: CPU attention sums a
# row's last partial block of keys in another order than a full one, so without it a token's
# keys and values would depend on where the prompt was cut (chunks, a prefix-cache hit)
BLOCK = 16


class KVLayer:
    """One layer's keys and values (rows, kv_heads, length, head_dim) with spare room, in fp16.

    Keys and values are rounded to fp16 as they are stored and read back as fp32 for
    attention, in every pass: a prompt's tokens then see the same keys and values whether
    it is prefilled at once, in chunks, or after a prefix-cache hit (whose stored KV are
    these fp16 tensors), and the cache takes half of fp32's memory."""

    __slots__ = ("_k", "_len", "_v", "_vlen")

    def __init__(self) -> None:
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self._len = self._vlen = 0  # apart: the scheduler sets keys, then reads values to build them

    @staticmethod
    def _roomy(t: torch.Tensor, more: int = 0) -> torch.Tensor:
        shape = list(t.shape)
        shape[2] += max(_SPARE, more + BLOCK)
        buf = t.new_empty(shape, dtype=torch.float16)
        buf[:, :, : t.shape[2]] = t
        buf[:, :, t.shape[2] :] = 0  # read (masked) by padded prefills: finite
        return buf

    @property
    def keys(self) -> torch.Tensor:
        assert self._k is not None
        return self._k[:, :, : self._len]

    @keys.setter
    def keys(self, t: torch.Tensor) -> None:  # the scheduler merges and trims batches through these
        self._k, self._len = self._roomy(t), t.shape[2]

    @property
    def values(self) -> torch.Tensor:
        assert self._v is not None
        return self._v[:, :, : self._vlen]

    @values.setter
    def values(self, t: torch.Tensor) -> None:
        self._v, self._vlen = self._roomy(t), t.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._k is None or self._v is None:
            self.keys, self.values = k, v
            return self.keys, self.values
        n = k.shape[2]
        if self._len + n + BLOCK > self._k.shape[2] or self._k.shape[0] != k.shape[0]:
            self._k, self._v = self._roomy(self.keys, n), self._roomy(self.values, n)
        self._k[:, :, self._len : self._len + n] = k
        self._v[:, :, self._len : self._len + n] = v
        self._len += n
        self._vlen += n
        return self.keys, self.values

    def stack(self, other: KVLayer, width: int) -> None:
        """This layer's rows, then ``other``'s, each left-padded with zero columns to ``width``, written
        once into one new buffer (a batch's cache joining the running one)."""
        rows = self.keys.shape[0]
        for mine, theirs, attr in ((self.keys, other.keys, "_k"), (self.values, other.values, "_v")):
            shape = list(mine.shape)
            shape[0], shape[2] = rows + theirs.shape[0], width + max(_SPARE, BLOCK)
            buf = mine.new_zeros(shape)
            buf[:rows, :, width - mine.shape[2] : width] = mine
            buf[rows:, :, width - theirs.shape[2] : width] = theirs
            setattr(self, attr, buf)
        self._len = self._vlen = width

    def padded(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values with zero columns up to ``length`` (at most ``BLOCK - 1`` past the end)."""
        assert self._k is not None and self._v is not None and self._k.shape[2] >= length
        return self._k[:, :, :length], self._v[:, :, :length]


class KVCache:
    def __init__(self, layers: int) -> None:
        self.layers = [KVLayer() for _ in range(layers)]
