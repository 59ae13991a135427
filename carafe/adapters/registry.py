"""The adapter registry: immutable versions, movable channels, an audit log.

Layout of a registry folder::

    <root>/<name>/versions/<version>/   PEFT files + manifest.json (write-once)
    <root>/<name>/channels.json         {"stable": 3, "previous": [1, 2], "canary": 4, ...}
    <root>/<name>/history.jsonl         who changed what, when (append-only)
    <root>/.removed/<name>-<time>/      removed adapters (their history is kept)
    <root>/base.json                    the served base model (id, digest), written by the gateway

Writers (CLI, admin HTTP, tuning's publish) take one file lock per registry and
write with temp file + rename, so concurrent writers and readers never see half a
change. Readers need no lock. A change that moves a channel is committed by its
history entry, which carries the channels after it (:mod:`carafe.adapters.journal`);
opening a registry repairs what a writer killed mid-change left (temp files,
staging folders, a channels file one step behind its history).

A source folder is checked (size, links, PEFT files, safetensors header, A/B ranks
against the config and the base model's shapes, finite weights) before anything is
copied, and the copy is checked again, so the registry never holds an adapter that
would fail at load.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from pydantic import BaseModel, Field

from carafe.adapters.errors import AdapterConflict, AdapterNotFound, InvalidAdapter
from carafe.adapters.journal import TRASH_PREFIX, Journal, remove_temp_files, write_atomic
from carafe.adapters.manifest import (
    MANIFEST_FILE,
    AdapterKind,
    BaseModelRef,
    Manifest,
    check_name,
    content_digest,
    read_manifest,
)
from carafe.adapters.peft_check import (
    MAX_ADAPTER_BYTES,
    Linears,
    check_peft_dir,
    copy_tree_inside,
    linear_shapes,
    scan_source,
)

log = logging.getLogger("carafe.adapters")
BASE_FILE = "base.json"
STAGING_PREFIX = ".staging-"
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


class ServedBase(BaseModelRef):
    """``base.json``: the served base model, and its module shapes when the engine knows them."""

    linears: Linears | None = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Registry:
    """Adapter versions and channels in a folder.

    ``base`` is the served base model (id + digest); :meth:`add` refuses versions
    trained on another base, and (when ``base.json`` has them) versions whose LoRA
    shapes do not fit its modules. ``max_rank`` is the engine's LoRA rank limit;
    ``max_bytes`` caps an adapter folder.
    """

    def __init__(
        self,
        root: Path,
        *,
        base: BaseModelRef | None = None,
        max_rank: int = 64,
        max_bytes: int = MAX_ADAPTER_BYTES,
    ) -> None:
        self.root = Path(root)
        recorded = self._recorded_base()
        self.base: BaseModelRef | None = base or (
            BaseModelRef(id=recorded.id, digest=recorded.digest) if recorded else None
        )
        self.linears = recorded.linears if recorded and self.base and recorded.digest == self.base.digest else None
        self.max_rank = max_rank
        self.max_bytes = max_bytes
        self._lock = FileLock(str(self.root / ".lock"), timeout=60)
        self._channels_cache: dict[str, tuple[tuple[int, int], Channels]] = {}
        self._manifest_cache: dict[tuple[str, int], tuple[tuple[int, int], Manifest]] = {}
        self.recover(blocking=False)

    # the served base model -------------------------------------------------
    def _recorded_base(self) -> ServedBase | None:
        path = self.root / BASE_FILE
        return ServedBase.model_validate_json(path.read_text()) if path.is_file() else None

    def record_base(self, base: BaseModelRef, model_folder: Path | None = None) -> None:
        """Remember the served base (the gateway does at start), so the CLI can check
        ``add`` against it without loading the model; ``model_folder`` (its safetensors)
        gives the module shapes adapters must fit."""
        self.base = BaseModelRef(id=base.id, digest=base.digest)
        self.linears = linear_shapes(model_folder) if model_folder is not None else None
        served = ServedBase(id=base.id, digest=base.digest, linears=self.linears or None)
        if self._recorded_base() != served:
            self.root.mkdir(parents=True, exist_ok=True)
            with self._lock:
                write_atomic(self.root / BASE_FILE, served.model_dump_json(indent=2))

    # crash repair ----------------------------------------------------------
    def recover(self, *, blocking: bool = True) -> list[str]:
        """Repair what writers killed mid-change left (see :mod:`carafe.adapters.journal`);
        without ``blocking``, skipped while another writer holds the lock."""
        if not self.root.is_dir():
            return []
        try:
            self._lock.acquire(timeout=60 if blocking else 0)
        except Timeout:
            return []
        except OSError as exc:  # a read-only registry (a reader without write access): nothing to repair from here
            log.debug("cannot lock %s to repair it: %s", self.root, exc)
            return []
        try:
            done = [f"removed {p.name}" for p in remove_temp_files(self.root)] + self._remove_dead_staging()
            for name in self.names():
                done += [f"{name}: {what}" for what in self._recover(name)]
        finally:
            self._lock.release()
        if done:
            log.warning("registry %s repaired after a crash: %s", self.root, "; ".join(done))
        return done

    def _remove_dead_staging(self) -> list[str]:
        done = []
        for staging in self.root.glob(STAGING_PREFIX + "*"):
            pid = staging.name.removeprefix(STAGING_PREFIX).split("-")[0]
            if not pid.isdigit() or not _pid_alive(int(pid)):
                shutil.rmtree(staging, ignore_errors=True)
                done.append(f"removed {staging.name}")
        return done

    def _recover(self, name: str) -> list[str]:
        """Under the lock: repair one adapter, finishing a whole-adapter removal its history records."""
        journal = Journal(self.root / name)
        done = journal.recover()
        entries = journal.entries()
        if entries and entries[-1].get("action") == "remove" and entries[-1].get("version") is None:
            self._bury(name)
            return [*done, "finished its removal"]
        added = {e.get("version") for e in entries if e.get("action") == "add"}
        for v in (int(p.name) for p in (self.root / name / "versions").iterdir() if p.name.isdigit()):
            if v not in added:  # renamed in, killed before its history entry
                journal.append([self._entry(name, "recovery", "add", version=v, note="history entry lost in a crash")])
                done.append(f"recorded the add of version {v}")
        self._channels_cache.pop(name, None)
        return done

    def consistent(self, name: str) -> bool:
        """Whether ``name``'s channels are what its history says they are."""
        return Journal(self._require(name)).matches()

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
        entries = Journal(self._require(name)).entries()
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
    @staticmethod
    def _entry(name: str, actor: str, action: str, **details: Any) -> dict[str, Any]:
        return {"at": _now(), "actor": actor, "action": action, "name": name, **details}

    def _record(self, name: str, actor: str, action: str, **details: Any) -> None:
        Journal(self.root / name).append([self._entry(name, actor, action, **details)])

    def _commit(self, name: str, entries: list[dict[str, Any]], channels: Channels) -> Channels:
        """Record ``entries`` with the channels after them, then move the channels (history first)."""
        Journal(self.root / name).append(entries, channels.model_dump(mode="json"))
        self._channels_cache.pop(name, None)
        return channels

    def _begin(self, name: str) -> None:
        """Under the lock, before a change: repair what a killed writer left for ``name``."""
        if (self.root / name / "versions").is_dir():
            self._recover(name)

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
        # The source is checked before a byte is copied, and the copy again (the source may change meanwhile).
        scan_source(source, max_bytes=self.max_bytes)
        self.check(source)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        try:
            copy_tree_inside(source, staging, max_bytes=self.max_bytes)
            rank = self.check(staging)
            manifest = read_manifest(staging)
            name = check_name(name or (manifest.name if manifest else source.resolve().name.lower()))
            self._check_base(manifest, source)
            with self._lock:
                self._begin(name)
                final = self._commit_version(staging, name, version, manifest, rank, kind, description)
                self._record_add(name, actor, final, source)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.get(name, final.version)

    def check(self, folder: Path) -> int:
        """Check ``folder`` as :meth:`add` would (PEFT files, ranks, base shapes, finite weights); its rank."""
        base = self.base.id if self.base else "the base model"
        return check_peft_dir(folder, max_rank=self.max_rank, linears=self.linears, base=base)

    def _record_add(self, name: str, actor: str, final: Manifest, source: Path) -> None:
        add = self._entry(name, actor, "add", version=final.version, digest=final.adapter_digest, source=str(source))
        ch = self.channels(name)
        if ch.stable is not None:
            Journal(self.root / name).append([add])
            return
        promote = self._entry(name, actor, "promote", version=final.version, channel=STABLE, previous=None)
        self._commit(name, [add, promote], ch.model_copy(update={"stable": final.version}))

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
        write_atomic(staging / MANIFEST_FILE, final.model_dump_json(indent=2))
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
            self._begin(name)
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
            entry = self._entry(name, actor, "promote", version=version, channel=channel, before=before)
            return self._commit(name, [entry], ch)

    def rollback(self, name: str, *, actor: str) -> Channels:
        """Make the previous stable version stable again."""
        with self._lock:
            self._begin(name)
            ch = self.channels(name)
            if not ch.previous:
                raise AdapterConflict(f"adapter {name!r} has no previous stable version to roll back to", param="name")
            *rest, target = ch.previous
            new = ch.model_copy(update={"stable": target, "previous": rest})
            return self._commit(name, [self._entry(name, actor, "rollback", version=target, replaced=ch.stable)], new)

    def split(self, name: str, version: int, weight: int, *, actor: str) -> Channels:
        """Send ``weight`` percent of users (sticky) to ``version`` as the canary."""
        if not 0 <= weight <= 100:
            raise InvalidAdapter("the canary weight is a percentage from 0 to 100", param="weight")
        with self._lock:
            self._begin(name)
            self.verify(name, version)
            ch = self.channels(name).model_copy(update={"canary": version, "canary_weight": weight})
            return self._commit(name, [self._entry(name, actor, "split", version=version, weight=weight)], ch)

    def remove(self, name: str, *, actor: str, version: int | None = None) -> None:
        """Remove one version no channel points at, or the whole adapter (kept under .removed/)."""
        with self._lock:
            self._require(name)
            self._begin(name)
            if version is None:
                self._record(name, actor, "remove")  # committed: a crash before the move is finished by recover
                self._bury(name)
                return
            av = self.get(name, version)
            ch = self.channels(name)
            if version in ch.referenced():
                raise AdapterConflict(f"{av.ref} is on a channel; promote another version first", param="version")
            trash = av.path.parent / f"{TRASH_PREFIX}{version}-{uuid.uuid4().hex}"
            os.rename(av.path, trash)  # gone at once; a crash mid-delete leaves trash that recover removes
            entry = self._entry(name, actor, "remove", version=version)
            self._commit(name, [entry], ch.model_copy(update={"previous": [v for v in ch.previous if v != version]}))
            shutil.rmtree(trash, ignore_errors=True)
            self._manifest_cache.pop((name, version), None)

    def _bury(self, name: str) -> None:
        graveyard = self.root / ".removed"
        graveyard.mkdir(exist_ok=True)
        os.rename(self.root / name, graveyard / f"{name}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}")
        self._channels_cache.pop(name, None)
