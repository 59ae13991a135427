"""Keys are stored hashed; config layers (file, env, defaults); the CLI hides secrets."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from carafe.cli.main import app
from carafe.config import load_config
from carafe.errors import RateLimited
from carafe.gateway.auth import KeyStore, Principal
from carafe.gateway.ratelimit import Limits, LocalCounters
from carafe.state import StateConfig


def test_keys_are_never_stored_in_clear(tmp_path) -> None:
    store = KeyStore.open(tmp_path)
    key, rec = store.create("alice", groups=["hr", "hr", " eng "], admin=True)
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    assert key.encode() not in on_disk and key.split("_", 2)[2].encode() not in on_disk
    assert (tmp_path / "state.db").stat().st_mode & 0o777 == 0o600
    p = store.authenticate(key)
    assert p is not None and p.user == "alice" and p.groups == ("eng", "hr") and p.is_admin
    # a second store (another process, trusting nothing it read) sees the key; revocation is seen too
    other = KeyStore.open(tmp_path, StateConfig(cache_ttl_s=0))
    assert other.authenticate(key) is not None
    store.revoke(rec.key_id)
    assert other.authenticate(key) is None


def test_principal_model_allow_list() -> None:
    p = Principal("u", models=("hr-style",))
    assert p.may_use("hr-style") and p.may_use("hr-style@3")
    assert not p.may_use("finance") and not p.may_use("SmolLM2-135M-Instruct")
    assert Principal("a", roles=("admin",), models=()).may_use("anything")


async def test_rate_limiter_window_and_isolation() -> None:
    now = [0.0]
    limits = Limits(LocalCounters(clock=lambda: now[0]), clock=lambda: now[0])
    a, b = Principal("a", rpm=2, key_id="a"), Principal("b", rpm=2, key_id="b")
    for _ in range(2):
        await limits.admit(a)
    with pytest.raises(RateLimited) as exc:
        await limits.admit(a)
    assert 59 < exc.value.retry_after <= 60
    await limits.admit(b)  # another key is unaffected
    now[0] = 60.5
    await limits.admit(a)  # the next minute


def test_config_file_env_and_defaults(tmp_path, monkeypatch) -> None:
    f = tmp_path / "carafe.yaml"
    f.write_text("server:\n  port: 9001\n  max_n: 3\nauth:\n  admin_bootstrap_key: s3cret-value\n")
    monkeypatch.setenv("CARAFE_SERVER__PORT", "9100")
    cfg = load_config(f)
    assert cfg.server.port == 9100  # env beats file
    assert cfg.server.max_n == 3  # file beats default
    assert cfg.server.host == "127.0.0.1"  # default
    assert cfg.auth.admin_bootstrap_key.get_secret_value() == "s3cret-value"


def test_config_rejects_unknown_keys_and_missing_file(tmp_path) -> None:
    from carafe.errors import InvalidInput

    f = tmp_path / "carafe.yaml"
    f.write_text("servre:\n  port: 1\n")
    with pytest.raises(Exception, match="servre"):
        load_config(f)
    with pytest.raises(InvalidInput):
        load_config(tmp_path / "missing.yaml")


def test_cli_config_show_hides_secrets(tmp_path) -> None:
    f = tmp_path / "carafe.yaml"
    f.write_text("auth:\n  admin_bootstrap_key: top-secret-123\nadapters:\n  engine:\n    vllm_api_key: vk-999\n")
    out = CliRunner().invoke(app, ["config", "show", "--config", str(f), "--json"])
    assert out.exit_code == 0, out.output
    assert "top-secret-123" not in out.output and "vk-999" not in out.output
    data = json.loads(out.output)
    assert data["auth"]["admin_bootstrap_key"] == "**********"


def test_cli_keys_create_prints_key_once_and_it_authenticates(tmp_path) -> None:
    f = tmp_path / "carafe.yaml"
    f.write_text(f"data_dir: {tmp_path / 'data'}\n")
    out = CliRunner().invoke(
        app, ["keys", "create", "--config", str(f), "--user", "ann", "--groups", "a,b", "--admin", "--json"]
    )
    assert out.exit_code == 0, out.output
    made = json.loads(out.output)
    store = KeyStore.open(tmp_path / "data")
    p = store.authenticate(made["key"])
    assert p.user == "ann" and p.groups == ("a", "b") and p.is_admin
    listed = CliRunner().invoke(app, ["keys", "list", "--config", str(f), "--json"])
    assert made["key"] not in listed.output and "secret_sha256" not in listed.output
    revoked = CliRunner().invoke(app, ["keys", "revoke", "--config", str(f), made["key_id"]])
    assert revoked.exit_code == 0, revoked.output

    # both changes are in the audit trail, with who made them, and the key is not
    trail = (tmp_path / "data" / "traces" / "traces.jsonl").read_text()
    assert made["key"] not in trail
    spans = {s["name"]: s for s in map(json.loads, trail.splitlines())}
    created = spans["carafe.admin.keys.create"]["attributes"]
    assert created["carafe.key.user"] == "ann" and created["carafe.key.id"] == made["key_id"]
    assert created["carafe.principal"] and created["carafe.admin.via"] == "cli"
    assert spans["carafe.admin.keys.revoke"]["attributes"]["carafe.key.id"] == made["key_id"]


def test_cli_reports_bad_config_cleanly(tmp_path) -> None:
    out = CliRunner().invoke(app, ["config", "show", "--config", str(tmp_path / "nope.yaml")])
    assert out.exit_code == 2
    assert "config file not found" in out.output
