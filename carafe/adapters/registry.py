"""The adapter registry: immutable versions, movable channels, an audit log.

Layout of a registry folder::

    <root>/<name>/versions/<version>/   PEFT files + manifest.json (write-once)
    <root>/<name>/channels.json         {"stable": 3, "previous": [1, 2], "canary": 4, ...}
    <root>/<name>/history.jsonl         who changed what, when (append-only)
    <root>/.removed/<name>-<time>/      removed adapters (their history is kept)
    <root>/base.json                    the served base model (id, digest), written by the gateway

Writers (CLI, admin HTTP, tuning's publish) take one file lock per registry and
write with temp file + rename, so concurrent writers and readers never see half a
change. Readers need no lock.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock
from pydantic import BaseModel, Field

from carafe.adapters.errors import AdapterConflict, AdapterNotFound, InvalidAdapter
from carafe.adapters.manifest import (
    MANIFEST_FILE,
    AdapterKind,
    BaseModelRef,
    Manifest,
    check_name,
    content_digest,
    read_manifest,
)
from carafe.adapters.peft_check import check_peft_dir, copy_tree_inside

BASE_FILE = "base.json"
STABLE = "stable"
CANARY = "canary"


class Channels(BaseModel):
    """Where the channels of one adapter point (``channels.json``)."""

    stable: int | None = None
    previous: list[int] = Field(default_factory=list, description="Former stable versions, oldest first (rollback)")
    canary: int | None = None
    canary_weight: int = Field(0, ge=0, le=100, description="Percent of users routed to the canary")
    named: dict[str, int] = Field(default_factory=dict, description="Other channels, e.g. {'beta': 4}")

    def referenced(self) -> set[int]:
        """Versions some channel points at (these are what engines should hold)."""
        refs = {v for v in (self.stable, self.canary) if v is not None}
        return refs | set(self.named.values())


@dataclass(frozen=True, slots=True)
class AdapterVersion:
    """One immutable version in the registry."""

    name: str
    version: int
    path: Path
    manifest: Manifest

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Registry:
    """Adapter versions and channels in a folder.

    ``base`` is the served base model (id + digest); :meth:`add` refuses versions
    trained on another base. ``max_rank`` is the engine's LoRA rank limit.
    """

    def __init__(self, root: Path, *, base: BaseModelRef | None = None, max_rank: int = 64) -> None:
        self.root = Path(root)
        self.base = base or self._recorded_base()
        self.max_rank = max_rank
        self._lock = FileLock(str(self.root / ".lock"), timeout=60)
        self._channels_cache: dict[str, tuple[tuple[int, int], Channels]] = {}
        self._manifest_cache: dict[tuple[str, int], tuple[tuple[int, int], Manifest]] = {}

    # the served base model -------------------------------------------------
    def _recorded_base(self) -> BaseModelRef | None:
        path = self.root / BASE_FILE
        return BaseModelRef.model_validate_json(path.read_text()) if path.is_file() else None

    def record_base(self, base: BaseModelRef) -> None:
        """Remember the served base (the gateway does at start), so the CLI can check
        ``add`` against it without loading the model."""
        self.base = base
        if self._recorded_base() != base:
            self.root.mkdir(parents=True, exist_ok=True)
            _write_atomic(self.root / BASE_FILE, base.model_dump_json(indent=2))

    # reading ---------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / "versions").is_dir()
        )

    def exists(self, name: str) -> bool:
        return (self.root / name / "versions").is_dir()

    def _require(self, name: str) -> Path:
        check_name(name)
        folder = self.root / name
        if not (folder / "versions").is_dir():
            raise AdapterNotFound(
                f"no adapter named {name!r} in the registry (see `carafe adapters list`)",
                param="model",
                code="model_not_found",
            )
        return folder

    def versions(self, name: str) -> list[int]:
        folder = self._require(name) / "versions"
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())

    def get(self, name: str, version: int) -> AdapterVersion:
        path = self._require(name) / "versions" / str(version)
        if not path.is_dir():
            raise AdapterNotFound(
                f"adapter {name!r} has no version {version} (versions: "
                f"{', '.join(map(str, self.versions(name))) or 'none'})",
                param="model",
                code="model_not_found",
            )
        st = path.stat()  # a removed and re-added version is a new folder: new inode
        key, stamp = (name, version), (st.st_ino, st.st_mtime_ns)
        cached = self._manifest_cache.get(key)
        if cached is None or cached[0] != stamp:
            manifest = read_manifest(path) or Manifest(
                name=name, version=version, base_model=BaseModelRef(id="?", digest="?")
            )
            cached = self._manifest_cache[key] = (stamp, manifest)
        return AdapterVersion(name, version, path, cached[1])

    def channels(self, name: str) -> Channels:
        """The channels of ``name`` (cached until channels.json changes)."""
        path = self._require(name) / "channels.json"
        try:
            st = path.stat()
        except FileNotFoundError:
            return Channels()
        stamp = (st.st_ino, st.st_mtime_ns)  # every write is a rename: a new inode
        cached = self._channels_cache.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        channels = Channels.model_validate_json(path.read_text())
        self._channels_cache[name] = (stamp, channels)
        return channels

    def stable(self, name: str) -> AdapterVersion:
        ch = self.channels(name)
        if ch.stable is None:
            raise AdapterNotFound(
                f"adapter {name!r} has no stable version yet: `carafe adapters promote {name} VERSION`",
                param="model",
                code="model_not_found",
            )
        return self.get(name, ch.stable)

    def history(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        path = self._require(name) / "history.jsonl"
        if not path.is_file():
            return []
        lines = path.read_text().splitlines()
        entries = [json.loads(line) for line in lines if line.strip()]
        return entries[-limit:] if limit else entries

    def verify(self, name: str, version: int) -> AdapterVersion:
        """The version, after checking its files still match the digest taken at add."""
        av = self.get(name, version)
        expected = av.manifest.adapter_digest
        if expected and content_digest(av.path) != expected:
            raise InvalidAdapter(
                f"{av.ref} is corrupted: its files no longer match the digest recorded when it "
                "was added; remove it and add it again",
                param="version",
            )
        return av

    # writing ---------------------------------------------------------------
    def _record(self, name: str, actor: str, action: str, **details: Any) -> None:
        entry = {"at": _now(), "actor": actor, "action": action, "name": name, **details}
        with (self.root / name / "history.jsonl").open("a") as fh:
            fh.write(json.dumps(entry, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _save_channels(self, name: str, channels: Channels) -> None:
        _write_atomic(self.root / name / "channels.json", channels.model_dump_json(indent=2))

    def add(
        self,
        source: Path,
        *,
        actor: str,
        name: str | None = None,
        version: int | None = None,
        kind: AdapterKind | None = None,
        description: str | None = None,
    ) -> AdapterVersion:
        """Copy a PEFT LoRA directory in as a new immutable version.

        The first version of a name becomes its stable version; later ones wait for
        :meth:`promote`. A ``manifest.json`` in ``source`` is kept (its base-model
        digest must match the served base); without one, a minimal manifest is made.
        """
        source = Path(source)
        if not source.is_dir():
            raise InvalidAdapter(f"{source} is not a directory (expected a PEFT adapter folder)", param="path")
        self.root.mkdir(parents=True, exist_ok=True)
        # Checks run on the copy, so the source cannot change between check and use.
        staging = self.root / f".staging-{uuid.uuid4().hex}"
        try:
            copy_tree_inside(source, staging)
            rank = check_peft_dir(staging, max_rank=self.max_rank)
            manifest = read_manifest(staging)
            name = check_name(name or (manifest.name if manifest else source.resolve().name.lower()))
            self._check_base(manifest, source)
            with self._lock:
                final = self._commit_version(staging, name, version, manifest, rank, kind, description)
                self._record(name, actor, "add", version=final.version, digest=final.adapter_digest, source=str(source))
                if self.channels(name).stable is None:
                    self._save_channels(name, self.channels(name).model_copy(update={"stable": final.version}))
                    self._record(name, actor, "promote", version=final.version, channel=STABLE, previous=None)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.get(name, final.version)

    def _commit_version(
        self,
        staging: Path,
        name: str,
        version: int | None,
        manifest: Manifest | None,
        rank: int,
        kind: AdapterKind | None,
        description: str | None,
    ) -> Manifest:
        versions = self.root / name / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        taken = set(self.versions(name))
        version = version or (manifest.version if manifest and manifest.version not in taken else None)
        version = version or (max(taken, default=0) + 1)
        if version in taken:
            raise AdapterConflict(
                f"{name}@{version} already exists and versions are immutable; add it under a new version",
                param="version",
            )
        data = manifest.model_dump() if manifest else {}
        data.update(name=name, version=version, rank=rank, adapter_digest=content_digest(staging))
        data.setdefault("base_model", self.base.model_dump() if self.base else {"id": "?", "digest": "?"})
        if kind is not None:
            data["kind"] = kind
        if description is not None:
            data["description"] = description
        final = Manifest.model_validate(data)
        _write_atomic(staging / MANIFEST_FILE, final.model_dump_json(indent=2))
        os.rename(staging, versions / str(version))
        return final

    def _check_base(self, manifest: Manifest | None, source: Path) -> None:
        if self.base is None or manifest is None:
            return
        if manifest.base_model.digest != self.base.digest:
            raise InvalidAdapter(
                f"{source} was trained on base model {manifest.base_model.id!r} ({manifest.base_model.digest}), "
                f"but this gateway serves {self.base.id!r} ({self.base.digest}); retrain it on the served base model",
                param="path",
                code="base_model_mismatch",
            )

    def promote(self, name: str, version: int, *, actor: str, channel: str = STABLE) -> Channels:
        """Point ``channel`` at ``version`` (stable keeps the old one for rollback)."""
        with self._lock:
            self.verify(name, version)  # 404 for a missing version, nothing changes
            ch = self.channels(name)
            before = ch.model_dump()
            if channel == STABLE:
                if ch.stable == version:
                    return ch
                previous = [*ch.previous, ch.stable] if ch.stable is not None else ch.previous
                canary = None if ch.canary == version else ch.canary
                ch = ch.model_copy(
                    update={
                        "stable": version,
                        "previous": previous[-20:],
                        "canary": canary,
                        "canary_weight": ch.canary_weight if canary is not None else 0,
                    }
                )
            elif channel == CANARY:
                ch = ch.model_copy(update={"canary": version})
            else:
                check_name(channel)
                ch = ch.model_copy(update={"named": {**ch.named, channel: version}})
            self._save_channels(name, ch)
            self._record(name, actor, "promote", version=version, channel=channel, before=before)
            return ch

    def rollback(self, name: str, *, actor: str) -> Channels:
        """Make the previous stable version stable again."""
        with self._lock:
            ch = self.channels(name)
            if not ch.previous:
                raise AdapterConflict(f"adapter {name!r} has no previous stable version to roll back to", param="name")
            *rest, target = ch.previous
            new = ch.model_copy(update={"stable": target, "previous": rest})
            self._save_channels(name, new)
            self._record(name, actor, "rollback", version=target, replaced=ch.stable)
            return new

    def split(self, name: str, version: int, weight: int, *, actor: str) -> Channels:
        """Send ``weight`` percent of users (sticky) to ``version`` as the canary."""
        if not 0 <= weight <= 100:
            raise InvalidAdapter("the canary weight is a percentage from 0 to 100", param="weight")
        with self._lock:
            self.verify(name, version)
            ch = self.channels(name).model_copy(update={"canary": version, "canary_weight": weight})
            self._save_channels(name, ch)
            self._record(name, actor, "split", version=version, weight=weight)
            return ch

    def remove(self, name: str, *, actor: str, version: int | None = None) -> None:
        """Remove one version no channel points at, or the whole adapter (kept under .removed/)."""
        with self._lock:
            folder = self._require(name)
            if version is None:
                self._record(name, actor, "remove")
                graveyard = self.root / ".removed"
                graveyard.mkdir(exist_ok=True)
                os.rename(folder, graveyard / f"{name}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}")
                self._channels_cache.pop(name, None)
                return
            av = self.get(name, version)
            ch = self.channels(name)
            if version in ch.referenced():
                raise AdapterConflict(f"{av.ref} is on a channel; promote another version first", param="version")
            if version in ch.previous:
                self._save_channels(name, ch.model_copy(update={"previous": [v for v in ch.previous if v != version]}))
            shutil.rmtree(av.path)
            self._manifest_cache.pop((name, version), None)
            self._record(name, actor, "remove", version=version)
