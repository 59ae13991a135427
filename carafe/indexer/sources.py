"""A source folder: which files it holds, what each one says, and who may read it.

ACL precedence for one document: Markdown front matter, then a sidecar
``NAME.acl.yaml``, then the nearest ``_acl.yaml`` in its folder or a parent folder
(inside the source), then the source's ``default_acl``, else admins only.

A symlink never lends its own folder's ACL to what it points at: every path is
resolved, a link leaving the source root is refused, and a link inside it gets
its *target's* ACL (front matter, sidecar and folder defaults of the target).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from carafe.indexer.acl import ADMINS_ONLY, Acl, check_known_groups, parse_acl
from carafe.indexer.config import SourceConfig
from carafe.indexer.errors import DocumentRejected, SourceNotFound
from carafe.indexer.extract import SAFE_LOADER, SUFFIXES, extract

FOLDER_ACL = "_acl.yaml"
SIDECAR = ".acl.yaml"


@dataclass(frozen=True)
class Document:
    """One readable document of a source, ready to chunk."""

    doc_id: str  # "<source>:<relative/path.md>"
    source: str
    path: str  # relative to the source root
    title: str
    text: str
    version: str
    content_hash: str
    acl: Acl


@dataclass(frozen=True)
class Rejection:
    """A file that could not be indexed, and why (shown in the sync summary)."""

    doc_id: str
    path: str
    reason: str


def doc_id_for(source: str, rel: str) -> str:
    return f"{source}:{rel}"


def _load_yaml_acl(path: Path, origin: str) -> Acl | None:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
    except (OSError, UnicodeDecodeError) as exc:
        raise DocumentRejected(f"{origin}: cannot read ({exc})") from exc
    except yaml.YAMLError as exc:
        raise DocumentRejected(f"{origin}: broken YAML: {getattr(exc, 'problem', exc)}") from exc
    return parse_acl(raw, origin=origin)


class Source:
    """Reads the documents of one configured folder."""

    def __init__(self, config: SourceConfig, *, max_file_bytes: int = 20_000_000) -> None:
        self.config = config
        self.name = config.name
        self.root = Path(config.path).expanduser()
        self.max_file_bytes = max_file_bytes
        self._folder_acl: dict[Path, Acl | DocumentRejected | None] = {}
        default = config.default_acl
        self.default = (
            Acl(tuple(sorted(default.groups)), tuple(sorted(default.users)), default.sensitivity)
            if default is not None
            else ADMINS_ONLY
        )

    def files(self) -> Iterator[Path]:
        """Candidate document files (relative paths), sorted, hidden files skipped."""
        if not self.root.is_dir():
            raise SourceNotFound(f"source {self.name!r}: folder {self.root} does not exist")
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fname in sorted(filenames):
                if fname.startswith(".") or fname == FOLDER_ACL or fname.endswith(SIDECAR):
                    continue
                path = Path(dirpath, fname)
                if path.suffix.lower() in SUFFIXES:
                    yield path.relative_to(self.root)

    def _folder_default(self, folder: Path) -> Acl | None:
        """Nearest ``_acl.yaml`` from ``folder`` up to the source root."""
        if folder in self._folder_acl:
            cached = self._folder_acl[folder]
        else:
            here = self.root / folder / FOLDER_ACL
            try:
                cached = _load_yaml_acl(here, f"{(folder / FOLDER_ACL).as_posix()}") if here.is_file() else None
            except DocumentRejected as exc:
                cached = exc
            if cached is None and folder != Path("."):
                cached = self._folder_default(folder.parent)
            self._folder_acl[folder] = cached
        if isinstance(cached, DocumentRejected):
            raise cached
        return cached

    def acl_for(self, rel: Path, meta: dict[str, Any]) -> Acl:
        acl = parse_acl(meta, origin=f"{rel.as_posix()} front matter")
        if acl is None:
            sidecar = self.root / rel.parent / (rel.name + SIDECAR)
            if not sidecar.is_file():
                sidecar = self.root / rel.parent / (rel.stem + SIDECAR)
            if sidecar.is_file():
                acl = _load_yaml_acl(sidecar, sidecar.relative_to(self.root).as_posix())
        if acl is None:
            acl = self._folder_default(rel.parent)
        acl = acl if acl is not None else self.default
        check_known_groups(acl, self.config.known_groups, origin=rel.as_posix())
        return acl

    def resolve(self, rel: Path) -> Path:
        """The file ``rel`` really is, relative to the source root: ``rel`` itself, or a
        symlink's target, whose ACL then applies; :class:`DocumentRejected` outside the root."""
        name = rel.as_posix()
        root = self.root.resolve()
        try:
            real = (self.root / rel).resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise DocumentRejected(f"{name}: broken or looping symlink ({exc}); refused") from exc
        if not real.is_relative_to(root):
            raise DocumentRejected(f"{name}: symlink points outside the source folder ({real}); refused")
        return real.relative_to(root)

    def _read_bytes(self, real: Path, name: str) -> bytes:
        """The bytes of a resolved file; O_NOFOLLOW so a link swapped in after resolving is refused."""
        try:
            fd = os.open(self.root.resolve() / real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size > self.max_file_bytes:
                    raise DocumentRejected(
                        f"{name}: file too large ({size / 1e6:.1f} MB > {self.max_file_bytes / 1e6:.1f} MB)"
                    )
                return fh.read()
        except OSError as exc:
            raise DocumentRejected(f"{name}: unreadable ({exc.strerror or exc})") from exc

    def read(self, rel: Path) -> Document:
        """One document; :class:`DocumentRejected` with a reason if it cannot be indexed."""
        name = rel.as_posix()
        real = self.resolve(rel)
        data = self._read_bytes(real, name)
        try:
            extracted = extract(rel, data)
        except DocumentRejected as exc:
            raise DocumentRejected(exc.message.replace(rel.name, name, 1)) from exc
        acl = self.acl_for(real, extracted.meta)
        content_hash = hashlib.sha256(f"{extracted.title}\n{extracted.text}".encode()).hexdigest()
        version = extracted.meta.get("version")
        return Document(
            doc_id=doc_id_for(self.name, name),
            source=self.name,
            path=name,
            title=extracted.title,
            text=extracted.text,
            version=str(version) if version is not None else content_hash[:12],
            content_hash=content_hash,
            acl=acl,
        )

    def scan(self) -> tuple[list[Document], list[Rejection]]:
        docs: list[Document] = []
        rejected: list[Rejection] = []
        for rel in self.files():
            try:
                docs.append(self.read(rel))
            except DocumentRejected as exc:
                rejected.append(Rejection(doc_id_for(self.name, rel.as_posix()), rel.as_posix(), exc.message))
        return docs, rejected
