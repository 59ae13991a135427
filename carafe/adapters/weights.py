"""A model folder's safetensors tensors, read one at a time.

The fast path packs each fp32 weight into a few bits as it is read, so the packed model
(~100 MB for SmolLM2) is all that stays. Plain file reads keep it that way: a memory map
(what ``safetensors.safe_open`` and transformers use) counts every page it touched
toward the process's resident memory until it is closed, so packing through one would
set the serving process's peak at the whole fp32 file (540 MB) plus the packed copy.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from carafe.adapters.errors import InvalidAdapter, ModelNotAvailable
from carafe.adapters.peft_check import read_safetensors_header

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


class TensorFiles:
    """``name -> tensor`` over every ``*.safetensors`` file of ``folder``; each read is a fresh tensor."""

    def __init__(self, folder: Path) -> None:
        self._index: dict[str, tuple[Path, int, int, str, list[int]]] = {}
        files = sorted(Path(folder).glob("*.safetensors"))
        if not files:
            raise ModelNotAvailable(f"{folder} holds no model weights (*.safetensors)", param="model")
        for path in files:
            try:
                header = read_safetensors_header(path)
            except InvalidAdapter as exc:
                raise ModelNotAvailable(str(exc).replace("adapter", "model"), param="model") from exc
            # the header checks that its data end the file: they start where the last one ends, from the back
            base = path.stat().st_size - max((t["data_offsets"][1] for t in header.values()), default=0)
            for name, meta in header.items():
                start, end = meta["data_offsets"]
                self._index[name] = (path, base + start, base + end, meta["dtype"], list(meta["shape"]))

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __getitem__(self, name: str) -> torch.Tensor:
        shape = self.shape(name)
        return self.rows(name, 0, shape[0] if shape else 1).reshape(shape)

    def shape(self, name: str) -> list[int]:
        return list(self._index[name][4])

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of a tensor's first dimension (a slice of a big table, read alone)."""
        path, begin, end, dtype, shape = self._index[name]
        if dtype not in _DTYPES:
            raise ModelNotAvailable(
                f"{path}: tensor {name} is {dtype}; the fast path reads float weights", param="model"
            )
        row = _DTYPES[dtype].itemsize * math.prod(shape[1:])
        stop = min(stop, shape[0] if shape else 1)
        first, last = begin + start * row, begin + stop * row
        buf = torch.empty(last - first, dtype=torch.uint8)
        with path.open("rb") as fh:
            fh.seek(first)
            if last > end or fh.readinto(buf.numpy().data) != last - first:
                raise ModelNotAvailable(f"{path} is truncated (tensor {name})", param="model")
        return buf.view(_DTYPES[dtype]).reshape(stop - start, *shape[1:])
