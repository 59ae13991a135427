"""Checking a PEFT LoRA folder before it enters the registry or an engine, and
copying it in without following anything out of it.

Only ``adapter_config.json`` + ``adapter_model.safetensors`` are accepted (a
pickled ``.bin`` could run code when loaded). The safetensors header is parsed
without torch and the file size is checked against it, so a truncated file is
refused at ``add`` rather than when a request needs it. Every ``lora_A`` /
``lora_B`` pair must agree with each other, with ``adapter_config.json``'s rank
and (when known) with the base model's module shapes, and every weight must be
finite: a diverged training run's NaNs would otherwise reach the sampler, and a
rank mismatch the native kernels, on the first request.

A source folder is walked (:func:`scan_source`) within size and file-count limits
before a byte is copied, so ``add /`` fails fast instead of filling the disk.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np

from carafe.adapters.errors import InvalidAdapter

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
MAX_ADAPTER_BYTES = 2 * 1024**3  # a rank-64 adapter on every module of a 70B model is ~1.7 GB
MAX_ADAPTER_FILES = 64
_MAX_HEADER = 100 * 1024 * 1024
_PREFIX = "base_model.model."
# dtype -> (unsigned view, bytes, exponent mask, mantissa mask): all exponent bits set = Inf or NaN
_FLOATS: dict[str, tuple[Any, int, int, int]] = {
    "F16": (np.uint16, 2, 0x7C00, 0x03FF),
    "BF16": (np.uint16, 2, 0x7F80, 0x007F),
    "F32": (np.uint32, 4, 0x7F800000, 0x007FFFFF),
    "F64": (np.uint64, 8, 0x7FF0000000000000, 0x000FFFFFFFFFFFFF),
}
Linears = dict[str, tuple[int, int]]  # module name -> (in_features, out_features)


def _refuse(message: str, code: str = "invalid_adapter") -> InvalidAdapter:
    return InvalidAdapter(message, param="path", code=code)


def read_safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """Tensor name -> {dtype, shape, data_offsets}; InvalidAdapter if malformed or truncated."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise _refuse(f"{path} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        if n > min(_MAX_HEADER, size - 8):
            raise _refuse(f"{path} is not a safetensors file (bad header length)")
        try:
            header: dict[str, Any] = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _refuse(f"{path} has a corrupted safetensors header") from exc
    if not isinstance(header, dict):
        raise _refuse(f"{path} has a corrupted safetensors header")
    header.pop("__metadata__", None)
    for key, meta in header.items():
        _check_entry(path, key, meta)
    end = max((t["data_offsets"][1] for t in header.values()), default=0)
    if 8 + n + end != size:
        raise _refuse(f"{path} is truncated or corrupted ({size} bytes, header describes {8 + n + end})")
    return {k: {**v, "start": 8 + n + v["data_offsets"][0]} for k, v in header.items()}


def _check_entry(path: Path, key: str, meta: Any) -> None:
    shape = meta.get("shape") if isinstance(meta, dict) else None
    offsets = meta.get("data_offsets") if isinstance(meta, dict) else None
    if not isinstance(shape, list) or not isinstance(offsets, list) or len(offsets) != 2:
        raise _refuse(f"{path}: tensor {key!r} has a malformed header entry")
    if not all(isinstance(d, int) and d >= 0 for d in [*shape, *offsets]):
        raise _refuse(f"{path}: tensor {key!r} has a malformed header entry")
    width = _FLOATS.get(str(meta.get("dtype", "")), (None, 0))[1]
    if width and offsets[1] - offsets[0] != math.prod(shape) * width:
        raise _refuse(f"{path}: tensor {key!r} of shape {shape} does not match its data size")


def linear_shapes(model_folder: Path) -> Linears:
    """The base model's 2-D weights as ``{module: (in, out)}``, from its safetensors headers (no loading)."""
    shapes: Linears = {}
    for file in sorted(Path(model_folder).glob("*.safetensors")):
        for key, meta in read_safetensors_header(file).items():
            if key.endswith(".weight") and len(meta["shape"]) == 2:
                shapes[key.removesuffix(".weight")] = (int(meta["shape"][1]), int(meta["shape"][0]))
    return shapes


def _read_config(folder: Path) -> dict[str, Any]:
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        bin_hint = (folder / "adapter_model.bin").exists()
        hint = " (found adapter_model.bin: convert it to safetensors)" if bin_hint else ""
        raise _refuse(f"{folder} is not a PEFT adapter: {CONFIG_FILE} is missing{hint}")
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(f"{config_path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise _refuse(f"{config_path} is not a JSON object")
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise _refuse(f"{folder} is not a LoRA adapter (peft_type={config.get('peft_type')!r}, expected 'LORA')")
    return config


def declared_rank(module: str, config: dict[str, Any]) -> int:
    """The rank ``adapter_config.json`` gives ``module`` (``rank_pattern`` first, as PEFT matches it)."""
    for pattern, rank in (config.get("rank_pattern") or {}).items():
        try:
            hit = re.match(rf"(.*\.)?({pattern})$", module) is not None
        except re.error:
            hit = module == pattern or module.endswith("." + pattern)
        if hit:
            return int(rank)
    return int(config.get("r") or 8)


def _check_pairs(weights: Path, header: dict[str, dict[str, Any]], config: dict[str, Any]) -> int:
    """Every lora_A has its lora_B, both 2-D, sharing the rank the config declares; returns the top rank."""
    lora_a = [k for k in header if ".lora_A." in k]
    if not lora_a:
        raise _refuse(f"{weights} holds no LoRA weights (no lora_A/lora_B tensors)")
    orphans = [k for k in header if ".lora_B." in k and k.replace(".lora_B.", ".lora_A.") not in header]
    if orphans:
        raise _refuse(f"{weights}: {orphans[0]} has no matching lora_A weight", "rank_mismatch")
    top = 0
    for a_key in lora_a:
        b_key = a_key.replace(".lora_A.", ".lora_B.")
        if b_key not in header:
            raise _refuse(f"{weights}: {a_key} has no matching lora_B weight", "rank_mismatch")
        a, b = header[a_key]["shape"], header[b_key]["shape"]
        if len(a) != 2 or len(b) != 2:
            raise _refuse(f"{weights}: {a_key} {a} and {b_key} {b} must both be 2-D matrices", "rank_mismatch")
        module = a_key.split(".lora_A.")[0].removeprefix(_PREFIX)
        want = declared_rank(module, config)
        if a[0] != b[1] or a[0] != want:
            raise _refuse(
                f"{weights}: {a_key} has rank {a[0]} and {b_key} rank {b[1]} (shapes {a} and {b}), but "
                f"{CONFIG_FILE} declares r={want} for {module}; A, B and the config must agree",
                "rank_mismatch",
            )
        top = max(top, want)
    return top


def _check_fits(weights: Path, header: dict[str, dict[str, Any]], linears: Linears, base: str) -> None:
    """Every LoRA pair targets a module of the base model with matching in/out features."""
    for a_key in (k for k in header if ".lora_A." in k):
        b_key = a_key.replace(".lora_A.", ".lora_B.")
        module = a_key.split(".lora_A.")[0].removeprefix(_PREFIX)
        dims = linears.get(module)
        if dims is None:
            raise _refuse(
                f"{weights} targets {module!r}, which the base model {base} does not have: "
                "the adapter was trained for another model",
                "base_model_mismatch",
            )
        a, b = header[a_key]["shape"], header[b_key]["shape"]
        if a[1] != dims[0] or b[0] != dims[1]:
            raise _refuse(
                f"{weights}: {a_key} {a} / {b_key} {b} do not fit {module} of {base} "
                f"({dims[0]} in, {dims[1]} out); the adapter was trained for another model",
                "base_model_mismatch",
            )


def check_finite(weights: Path, header: dict[str, dict[str, Any]]) -> None:
    """Refuse a weights file with a NaN or Inf anywhere (read through mmap, one tensor at a time)."""
    with weights.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for key, meta in header.items():
            spec = _FLOATS.get(meta.get("dtype", ""))
            if spec is None:
                raise _refuse(f"{weights}: tensor {key!r} has dtype {meta.get('dtype')!r}; use F32, F16 or BF16")
            view, _, exp_mask, mant_mask = spec
            count = math.prod(meta["shape"])
            bits = np.frombuffer(data, dtype=view, count=count, offset=meta["start"])
            special = (bits & view(exp_mask)) == view(exp_mask)
            if special.any():
                nan = int(((bits & view(mant_mask)) != 0)[special].sum())
                inf = int(special.sum()) - nan
                del bits, special  # release the buffer before the mmap closes
                raise _refuse(
                    f"{weights}: tensor {key} holds {nan} NaN and {inf} Inf values (a diverged training run?); "
                    "retrain or fix the adapter",
                    "non_finite_weights",
                )
            del bits, special


def check_peft_dir(folder: Path, *, max_rank: int, linears: Linears | None = None, base: str = "the base") -> int:
    """Check ``folder`` is a finite, self-consistent PEFT LoRA adapter within ``max_rank``
    (fitting ``linears``, the base model's module shapes, when given); returns its rank."""
    folder = Path(folder)
    config = _read_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise _refuse(f"{folder} is not a PEFT adapter: {WEIGHTS_FILE} is missing")
    header = read_safetensors_header(weights)
    patterns = (config.get("rank_pattern") or {}).values()
    rank = max([_check_pairs(weights, header, config), *(int(r) for r in patterns)])
    if rank > max_rank:
        raise _refuse(
            f"{folder} has LoRA rank {rank}, over the engine's limit of {max_rank} (adapters.engine.max_lora_rank)",
            "rank_too_large",
        )
    if linears:
        _check_fits(weights, header, linears, base)
    check_finite(weights, header)
    return rank


def scan_source(source: Path, *, max_bytes: int = MAX_ADAPTER_BYTES, max_files: int = MAX_ADAPTER_FILES) -> list[Path]:
    """The regular files under ``source`` (relative paths), refusing what :func:`copy_tree_inside`
    would: links out of the folder, linked folders, special files, and trees over the limits."""
    root = Path(source).resolve()
    files: list[Path] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for entry in [*dirnames, *filenames]:
            _check_inside(root, here / entry)
        for f in filenames:
            path = here / f
            if not path.resolve().is_file():
                raise _refuse(f"{path} is not a regular file")
            files.append(path.relative_to(root))
            total += path.resolve().stat().st_size
            if len(files) > max_files or total > max_bytes:
                raise _refuse(
                    f"{source} is over the limits for an adapter folder ({max_files} files, {max_bytes} bytes); "
                    "point at the folder that holds adapter_config.json",
                    "adapter_too_large",
                )
    return files


def _check_inside(root: Path, path: Path) -> None:
    real = path.resolve()
    if real != root and root not in real.parents:
        raise _refuse(f"{path} points outside the adapter folder ({real}); copy the file in instead", "path_escape")
    if path.is_symlink() and real.is_dir():
        raise _refuse(f"{path} is a symlinked folder; adapter folders must be self-contained", "path_escape")


def copy_tree_inside(source: Path, target: Path, *, max_bytes: int = MAX_ADAPTER_BYTES) -> None:
    """Copy the regular files under ``source`` into ``target`` (checked again as copied, and
    never more than ``max_bytes`` in all, so a source that grows meanwhile is cut off)."""
    root = Path(source).resolve()
    target.mkdir(parents=True)
    budget = max_bytes
    for rel in scan_source(root, max_bytes=max_bytes):
        src = root / rel
        _check_inside(root, src)
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        with src.resolve().open("rb") as fin, (target / rel).open("wb") as fout:
            shutil.copyfileobj(fin, fout)
            budget -= fout.tell()
        if budget < 0:
            raise _refuse(f"{source} grew past {max_bytes} bytes while it was copied", "adapter_too_large")
