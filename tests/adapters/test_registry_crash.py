"""The registry after a writer is killed mid-change (issue 29, L8): a channel never
moves without its history entry, and no temp file or staging folder outlives the
next open."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import carafe.adapters.journal as journal_module
from carafe.adapters.registry import Registry
from tests.adapters.test_registry import BASE
from tests.lora import make_lora

PROMOTE_LOOP = """
import sys
from carafe.adapters.registry import Registry
reg = Registry(sys.argv[1])
i = 0
while True:
    i += 1
    reg.promote("style", 1 + i % 3, actor="loop")
    if i % 7 == 0 and reg.channels("style").previous:
        reg.rollback("style", actor="loop")
    if i % 5 == 0:
        reg.split("style", 1 + (i + 1) % 3, i % 100, actor="loop")
    print(i, flush=True)
"""


@pytest.fixture(scope="module")
def lora_src(tmp_path_factory) -> Path:
    return make_lora(tmp_path_factory.mktemp("lora") / "style", rank=4, seed=3)


@pytest.fixture
def root(tmp_path, lora_src) -> Path:
    reg = Registry(tmp_path / "registry", base=BASE, max_rank=16)
    for _ in range(3):
        reg.add(lora_src, actor="t")
    return reg.root


def last_channel_entry(root: Path) -> dict:
    lines = (root / "style" / "history.jsonl").read_text().splitlines()
    return next(e for e in map(json.loads, reversed(lines)) if e["action"] in ("promote", "rollback", "split"))


def channels_file(root: Path) -> dict:
    return json.loads((root / "style" / "channels.json").read_text())


def test_a_writer_killed_between_history_and_channels_is_rolled_forward_on_open(root, monkeypatch):
    def killed(path: Path, text: str) -> None:  # the process dies where channels.json would be replaced
        (path.parent / f".{path.name}.dead.tmp").write_text(text[: len(text) // 2])
        raise SystemExit("killed")

    monkeypatch.setattr(journal_module, "write_atomic", killed)
    with pytest.raises(SystemExit):
        Registry(root).promote("style", 3, actor="bob")
    monkeypatch.undo()
    entry = last_channel_entry(root)
    assert (entry["actor"], entry["version"]) == ("bob", 3)  # history has it, so the move is committed
    reg = Registry(root)  # opening repairs
    assert reg.channels("style").stable == 3 and channels_file(root) == entry["channels"]
    assert reg.consistent("style") and not list(root.rglob("*.tmp"))


def test_a_torn_history_line_and_dead_staging_are_cleaned_on_open(root):
    with (root / "style" / "history.jsonl").open("a") as fh:
        fh.write('{"at": "2026-01-01", "actor": "x", "act')
    dead = root / ".staging-999999999-abc"  # no such pid: its add was killed while copying
    dead.mkdir()
    (dead / "adapter_model.safetensors").write_bytes(b"x" * 10)
    reg = Registry(root)
    assert not dead.exists()
    assert (root / "style" / "history.jsonl").read_text().endswith("\n")
    assert all(e["actor"] != "x" for e in reg.history("style"))
    reg.promote("style", 2, actor="a")
    assert reg.history("style")[-1]["actor"] == "a" and reg.consistent("style")


def test_promotes_killed_at_random_never_leave_history_and_channels_apart(root):
    """The crash test: a process promotes, rolls back and splits in a loop and is
    SIGKILLed at random instants; after every kill the registry opens consistent."""
    rng = random.Random(29)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    changes = 0
    for _ in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-c", PROMOTE_LOOP, str(root)], stdout=subprocess.PIPE, env=env, text=True
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # started and committed at least one change
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        reg = Registry(root)
        assert reg.consistent("style"), reg.history("style", 3)
        entry = last_channel_entry(root)
        assert channels_file(root) == entry["channels"]
        if entry["action"] == "promote" and entry.get("channel") == "stable":
            assert reg.channels("style").stable == entry["version"]
        assert not list(root.rglob("*.tmp")) and not list(root.glob(".staging-*"))
        changes += sum(1 for e in reg.history("style") if e["actor"] == "loop")
    assert changes > 12
