"""`carafe demo --no-serve`: fresh keys printed whole (copyable), example policies indexed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
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
    assert set(store.authenticate(keys["hana"]).groups) == {"hr", "employees", "everyone"}
    assert re.search(r"added\s+\S*\s*(\d+)", first.output) and "failed" in first.output

    second = runner.invoke(app, ["demo", "--config", "examples/carafe.yaml", "--no-serve"])
    assert second.exit_code == 0, second.output
    assert store.authenticate(dict(re.findall(r"^\s+(\w+) \(.*?\)\s+(crf_\S+)$", second.output, re.M))["hana"])
    assert store.authenticate(keys["hana"]) is None  # an earlier run's keys stop working


@pytest.mark.slow
def test_demo_guest_sees_public_documents_only(tmp_path, monkeypatch):
    """Issue 29 L10: the guest had no groups, so it saw no public document (the README says it does)."""
    import json

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("CARAFE_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    assert runner.invoke(app, ["demo", "--config", "examples/carafe.yaml", "--no-serve"]).exit_code == 0

    def docs(user: str, query: str) -> set[str]:
        out = runner.invoke(
            app, ["index", "search", query, "--as", user, "-k", "10", "--config", "examples/carafe.yaml", "--json"]
        )
        assert out.exit_code == 0, out.output
        return {p["doc_id"] for p in json.loads(out.output)["passages"]}

    seen = docs("guest", "When is the support desk open and which days are holidays?")
    assert seen and all(d.split(":", 1)[1].startswith("public/") for d in seen)
    assert not any("/hr/" in d or ":hr/" in d for d in docs("guest", "salary bands and benefits"))
    assert any(":public/" in d for d in docs("hana", "When is the support desk open?"))
