"""Checking a PEFT LoRA folder before it enters the registry, and copying it in
without following anything out of it.

Only ``adapter_config.json`` + ``adapter_model.safetensors`` are accepted (a
pickled ``.bin`` could run code when loaded). The safetensors header is parsed
without torch, and the file size is checked against it, so a truncated file is
refused at ``add`` rather than when a request needs it.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

from carafe.adapters.errors import InvalidAdapter

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_MAX_HEADER = 100 * 1024 * 1024


def read_safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """Tensor name -> {dtype, shape, data_offsets}; InvalidAdapter if malformed or truncated."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise InvalidAdapter(f"{path} is not a safetensors file (too short)", param="path")
        (n,) = struct.unpack("<Q", raw)
        if n > min(_MAX_HEADER, size - 8):
            raise InvalidAdapter(f"{path} is not a safetensors file (bad header length)", param="path")
        try:
            header: dict[str, Any] = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidAdapter(f"{path} has a corrupted safetensors header", param="path") from exc
    header.pop("__metadata__", None)
    end = max((t["data_offsets"][1] for t in header.values()), default=0)
    if 8 + n + end != size:
        raise InvalidAdapter(
            f"{path} is truncated or corrupted ({size} bytes, header describes {8 + n + end})", param="path"
        )
    return header


def check_peft_dir(folder: Path, *, max_rank: int) -> int:
    """Check ``folder`` is a PEFT LoRA adapter within ``max_rank``; returns its rank."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file():
        hint = (
            " (found adapter_model.bin: convert it to safetensors)" if (folder / "adapter_model.bin").exists() else ""
        )
        raise InvalidAdapter(f"{folder} is not a PEFT adapter: {CONFIG_FILE} is missing{hint}", param="path")
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidAdapter(f"{config_path} is not valid JSON: {exc}", param="path") from exc
    if not isinstance(config, dict) or str(config.get("peft_type", "")).upper() != "LORA":
        raise InvalidAdapter(
            f"{folder} is not a LoRA adapter (peft_type={config.get('peft_type')!r}, expected 'LORA')"
            if isinstance(config, dict)
            else f"{config_path} is not a JSON object",
            param="path",
        )
    if not weights_path.is_file():
        raise InvalidAdapter(f"{folder} is not a PEFT adapter: {WEIGHTS_FILE} is missing", param="path")
    header = read_safetensors_header(weights_path)
    lora_a = {k: v for k, v in header.items() if "lora_A" in k}
    if not lora_a or not any("lora_B" in k for k in header):
        raise InvalidAdapter(f"{weights_path} holds no LoRA weights (no lora_A/lora_B tensors)", param="path")
    ranks = [int(t["shape"][0]) for t in lora_a.values() if t.get("shape")]
    declared = [config.get("r") or 0, *(config.get("rank_pattern") or {}).values()]
    rank = max([*ranks, *(int(r) for r in declared)], default=0)
    if rank > max_rank:
        raise InvalidAdapter(
            f"{folder} has LoRA rank {rank}, over the engine's limit of {max_rank} (adapters.engine.max_lora_rank)",
            param="path",
            code="rank_too_large",
        )
    return rank


def copy_tree_inside(source: Path, target: Path) -> None:
    """Copy the regular files under ``source`` into ``target``, refusing any symlink
    that points outside ``source`` (and anything that is not a file or folder)."""
    root = Path(source).resolve()
    target.mkdir(parents=True)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for entry in [*dirnames, *filenames]:
            path = here / entry
            real = path.resolve()
            if real != root and root not in real.parents:
                raise InvalidAdapter(
                    f"{path} points outside the adapter folder ({real}); copy the file in instead",
                    param="path",
                    code="path_escape",
                )
            if path.is_symlink() and real.is_dir():
                raise InvalidAdapter(
                    f"{path} is a symlinked folder; adapter folders must be self-contained",
                    param="path",
                    code="path_escape",
                )
        rel = here.relative_to(root)
        for d in dirnames:
            (target / rel / d).mkdir()
        for f in filenames:
            src = here / f
            if not src.resolve().is_file():
                raise InvalidAdapter(f"{src} is not a regular file", param="path")
            shutil.copyfile(src, target / rel / f)
