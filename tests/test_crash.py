"""bench/crash.py, short: a real gateway and the CLI are killed with kill -9 while
promotes, key changes, ACL edits with syncs and chats go on; afterwards no
acknowledged write is lost, every restart succeeded, the registry's history
matches its channels and no document was served wider than its source allows
after a sync (issue 29: "a crash test for Carafe's own state")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MODELS_CACHE

REPO = Path(__file__).resolve().parents[1]
FAULTS = ("restart_failed", "lost_promote", "lost_key", "lost_revocation", "registry_mismatch", "acl_violation")


@pytest.mark.slow
def test_a_short_crash_run_loses_nothing(tmp_path):
    out = tmp_path / "figures.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "CARAFE_TEST_MODELS": str(MODELS_CACHE)}
    # seed 1 at p=0.5: a CLI command is killed in the first interval, the gateway and its CLI sync in the second
    cmd = [sys.executable, str(REPO / "bench" / "crash.py"), "--duration", "30", "--interval", "10"]
    cmd += ["--p-kill", "0.5", "--seed", "1", "--workdir", str(tmp_path / "run"), "--json-out", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    assert out.is_file(), run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(out.read_text())["figures"]
    assert {f: figures[f] for f in FAULTS} == dict.fromkeys(FAULTS, 0), run.stdout[-3000:]
    assert figures.get("crasher_error", 0) == 0, run.stdout[-3000:]
    assert figures["kills: gateway"] >= 1 and figures["restarts"] == figures["kills: gateway"]
    assert figures["promotes acknowledged"] > 0 and figures["keys created (acknowledged)"] > 0
    assert figures.get("syncs acknowledged (HTTP)", 0) + figures.get("syncs acknowledged (CLI)", 0) > 0
    assert run.returncode == 0, run.stdout[-3000:]
