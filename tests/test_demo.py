"""`carafe demo --no-serve`: fresh keys printed whole (copyable), example policies indexed."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from carafe.cli.main import app
from carafe.gateway.auth import KeyStore
from carafe.state import StateConfig

REPO = Path(__file__).resolve().parent.parent


def test_demo_prints_whole_keys_that_authenticate_and_indexes_the_policies(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the demo config's paths are relative to the repository root
    monkeypatch.setenv("CARAFE_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    first = runner.invoke(app, ["demo", "--config", "examples/carafe.yaml", "--no-serve"])
    assert first.exit_code == 0, first.output
    keys = dict(re.findall(r"^\s+(\w+) \(.*?\)\s+(crf_\S+)$", first.output, re.M))
    assert set(keys) == {"admin", "hana", "finn", "eli", "lea", "guest"}
    store = KeyStore.open(tmp_path / "data", StateConfig(cache_ttl_s=0))
    assert store.authenticate(keys["admin"]).is_admin
    assert set(store.authenticate(keys["hana"]).groups) == {"hr", "employees"}
    assert re.search(r"added\s+\S*\s*(\d+)", first.output) and "failed" in first.output

    second = runner.invoke(app, ["demo", "--config", "examples/carafe.yaml", "--no-serve"])
    assert second.exit_code == 0, second.output
    assert store.authenticate(dict(re.findall(r"^\s+(\w+) \(.*?\)\s+(crf_\S+)$", second.output, re.M))["hana"])
    assert store.authenticate(keys["hana"]) is None  # an earlier run's keys stop working
