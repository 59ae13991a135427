"""One adapter's change history and channels, written so that a kill -9 at any
instant never leaves a channel move without its history entry.

The history (``history.jsonl``) is the commit record: a change that moves a
channel appends its entry, carrying the channels as they are after it, in one
``write`` + ``fsync``; only then is ``channels.json`` replaced (temp file +
rename). A writer killed between the two leaves history one step ahead, and
:meth:`Journal.recover` (run under the registry lock, on open and before every
write) rolls ``channels.json`` forward to the last entry's channels, cuts a torn
last line, and deletes temp files and half-deleted versions a killed writer left.
Readers take no lock: they see either the state before a change or after it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

HISTORY_FILE = "history.jsonl"
CHANNELS_FILE = "channels.json"
SNAPSHOT = "channels"  # the key of a history entry that holds the channels after it
TRASH_PREFIX = ".trash-"
_TAIL = 64 * 1024


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: readers and a crash see the old file or the new, never half."""
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


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files :func:`write_atomic` leaves when killed (call under the lock)."""
    gone = [p for p in folder.glob(".*.tmp") if p.is_file()]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def _parse(lines: list[str]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a crash (cut at the next recover)
    return out


class Journal:
    """History + channels of the adapter stored in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.history = self.folder / HISTORY_FILE
        self.channels = self.folder / CHANNELS_FILE

    def entries(self) -> list[dict[str, Any]]:
        if not self.history.is_file():
            return []
        return _parse([line for line in self.history.read_text().splitlines() if line.strip()])

    def last_snapshot(self) -> dict[str, Any] | None:
        """The channels the newest history entry that moved them recorded (None: no such entry)."""
        if not self.history.is_file():
            return None
        with self.history.open("rb") as fh:
            fh.seek(max(0, self.history.stat().st_size - _TAIL))
            tail = fh.read().decode(errors="replace").splitlines()
        for entry in reversed(_parse(tail)):
            if SNAPSHOT in entry:
                return dict(entry[SNAPSHOT])
        return None

    def append(self, entries: list[dict[str, Any]], channels: dict[str, Any] | None = None) -> None:
        """Commit ``entries`` (the last one carrying ``channels``, if given), then apply ``channels``."""
        if channels is not None:
            entries = [*entries[:-1], {**entries[-1], SNAPSHOT: channels}]
        text = "".join(json.dumps(e, default=str) + "\n" for e in entries)
        with self.history.open("a") as fh:
            fh.write(text)  # one write: a kill lands before it or after it
            fh.flush()
            os.fsync(fh.fileno())
        if channels is not None:
            write_atomic(self.channels, json.dumps(channels, indent=2))

    def recover(self) -> list[str]:
        """Repair what a killed writer left (call under the registry lock); returns what was done."""
        done = [f"removed {p.name}" for p in remove_temp_files(self.folder)]
        versions = self.folder / "versions"
        for trash in versions.glob(TRASH_PREFIX + "*") if versions.is_dir() else []:
            shutil.rmtree(trash, ignore_errors=True)
            done.append(f"removed {trash.name}")
        if self.history.is_file():
            done += self._cut_torn_line()
        snapshot = self.last_snapshot()
        if snapshot is not None and self._current() != snapshot:
            write_atomic(self.channels, json.dumps(snapshot, indent=2))
            done.append("rolled channels.json forward to the last history entry")
        return done

    def _current(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.channels.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _cut_torn_line(self) -> list[str]:
        size = self.history.stat().st_size
        if size == 0:
            return []
        with self.history.open("rb+") as fh:
            fh.seek(max(0, size - _TAIL))
            tail = fh.read()
            if tail.endswith(b"\n"):
                return []
            keep = size - len(tail) + tail.rfind(b"\n") + 1
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        return [f"cut a torn history line ({size - keep} bytes)"]

    def matches(self) -> bool:
        """Whether ``channels.json`` is what the last channel-moving history entry says."""
        snapshot = self.last_snapshot()
        return snapshot is None or snapshot == self._current()
