"""What a running ``carafe tune`` is doing, in ``<output folder>/progress.json``, for
people who watch it from elsewhere (the console's tuning page reads the file; the
gateway does not import this package, so the file is the contract)::

    {"stage": "generate" | "train" | "eval" | "publish" | "done" | "failed",
     "phase": "knowledge", "step": 12, "total": 40, "loss": 1.23, "tokens_per_s": 512.3,
     "losses": [[step, loss], ...], "pid": 4242, "started_at": ..., "updated_at": ...}

Written atomically, at most once a second while steps come (and always when a phase
starts or ends and at a stage's end), so a reader never sees half a file and training never waits on the disk.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from carafe.indexer.manifest import write_json_atomic
from carafe.tuning.train import StepInfo

FILE = "progress.json"
MAX_LOSSES = 500
EVERY_S = 1.0


class RunProgress:
    """One stage's progress file; ``with RunProgress(out, "train") as p: ... p.step(info)``."""

    def __init__(self, out: Path, stage: str) -> None:
        self.path = Path(out) / FILE
        now = time.time()
        self.data: dict[str, Any] = {"stage": stage, "pid": os.getpid(), "started_at": now, "step": 0, "losses": []}
        self._written = 0.0

    def __enter__(self) -> RunProgress:
        self._write(force=True)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.data["stage"] = "done" if kind is None else "failed"
        if exc is not None:
            self.data["error"] = str(exc)[:500]
        self._write(force=True)

    def step(self, info: StepInfo) -> None:
        """One training step done."""
        new_phase = info.phase != self.data.get("phase")
        if new_phase:
            self.data["losses"] = []
        self.data.update(
            phase=info.phase, step=info.step, total=info.total, loss=round(info.loss, 5),
            tokens_per_s=round(info.tokens_per_s, 1),
        )  # fmt: skip
        self.data["losses"] = [*self.data["losses"], [info.step, round(info.loss, 5)]][-MAX_LOSSES:]
        self._write(force=new_phase or info.step == info.total)

    def advance(self, what: str, n: int) -> None:
        """``n`` more units of a stage without steps (teacher calls while generating)."""
        self.data.update(phase=what, step=int(self.data.get("step") or 0) + n)
        self._write()

    def _write(self, *, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._written < EVERY_S:
            return
        self.data["updated_at"] = now
        try:
            write_json_atomic(self.path, self.data)
        except OSError:  # watching is a courtesy: a full disk must not stop the run
            return
        self._written = now
