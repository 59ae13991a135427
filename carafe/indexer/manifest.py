"""What the last sync wrote, per document: lets the next sync skip unchanged ones.

The store stays the source of truth: a sync reconciles the manifest against the
point ids the store actually holds, so a lost or stale manifest only costs
re-embedding, never a wrong index. Written atomically (temp file + rename).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

_NAMESPACE = uuid.UUID("5b0f4f5e-8c1e-4c55-9a59-6f1c7d3f2a10")


def point_id(doc_id: str, chunk: int) -> str:
    """Deterministic point id: the same chunk of the same document always lands on the same point."""
    return str(uuid.uuid5(_NAMESPACE, f"{doc_id}#{chunk}"))


def point_ids(doc_id: str, chunks: int) -> set[str]:
    return {point_id(doc_id, n) for n in range(chunks)}


@dataclass
class DocState:
    content_hash: str
    meta_hash: str  # ACL, sensitivity, version, path: changes that need no re-embedding
    chunks: int


def make_private(root: Path) -> None:
    """Owner-only access to ``root`` and everything in it (folders 0700, files 0600): the
    embedded index's WAL and segments, and the sync state, name and hold restricted text.
    Created with mode 0700 when missing; links are left alone; files vanishing meanwhile
    (segment merges) are skipped."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    for dirpath, _dirs, files in os.walk(root):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(dirpath, 0o700)
        for name in files:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(FileNotFoundError):
                if not os.path.islink(path):
                    os.chmod(path, 0o600)


def write_json_atomic(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Manifest:
    """``doc_id -> DocState`` in one JSON file."""

    VERSION = 1

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.docs: dict[str, DocState] = {}
        self.embedding_model: str | None = None  # what made the stored vectors
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if raw.get("version") == self.VERSION:
                self.docs = {k: DocState(**v) for k, v in raw.get("docs", {}).items()}
                self.embedding_model = raw.get("embedding_model")
        except (OSError, ValueError, TypeError, AttributeError):
            self.docs = {}  # missing or unreadable: the next sync re-embeds, nothing worse

    def use_embedding_model(self, model_id: str) -> bool:
        """Record the model that embeds from now on; True when it differs from the one that
        made the stored vectors, which then all count as stale (re-embedded by the sync)."""
        if self.embedding_model == model_id:
            return False
        changed = bool(self.docs)
        self.docs.clear()
        self.embedding_model = model_id
        self.save()
        return changed

    def save(self) -> None:
        write_json_atomic(
            self.path,
            {
                "version": self.VERSION,
                "embedding_model": self.embedding_model,
                "docs": {k: asdict(v) for k, v in sorted(self.docs.items())},
            },
        )
