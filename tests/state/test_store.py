"""The state database on SQLite and on a real PostgreSQL: the migrations build
exactly the models' schema; keys are stored hashed; a legacy keys.json is imported
once and the import says what it took; concurrent writers (the CLI beside a
gateway) never lose a key or a revocation; stored conversations belong to a
credential; every change leaves an admin record."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from carafe.gateway.auth import KeyStore
from carafe.state import Conversations, Database, Keys, StateConfig, open_state, records
from carafe.state.schema import Base

REPO = Path(__file__).resolve().parents[2]


def test_migrations_build_the_models_schema(database_url: str) -> None:
    db = Database.open(database_url)
    Database.open(database_url)  # a second opener (another replica) finds it migrated
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == [], "schema.py changed without a migration: add one under carafe/state/migrations/versions"


def test_keys_hashed_revoked_and_recorded(database_url: str) -> None:
    keys = Keys(Database.open(database_url))
    key, rec = keys.create("hana", groups=["hr"], rpm=5, tpm=1000, team="people", actor="root")
    stored = keys.get(rec.key_id)
    assert stored is not None and key.split("_", 2)[2] not in json.dumps(stored.public())
    assert stored.secret_sha256 != key.split("_", 2)[2] and stored.team == "people" and stored.tpm == 1000
    keys.revoke(rec.key_id, actor="root")
    assert keys.get(rec.key_id).revoked  # type: ignore[union-attr]
    actions = [(a.actor, a.action, a.target) for a in records.recent(keys.db)]
    assert actions[:2] == [("root", "key.revoke", rec.key_id), ("root", "key.create", rec.key_id)]


def test_legacy_keys_json_is_imported_once_and_says_what_it_took(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    legacy = data / "keys.json"
    live = {"key_id": "aaa", "secret_sha256": "0" * 64, "user": "hana", "groups": ["hr"], "rpm": 9}
    gone = {"key_id": "bbb", "secret_sha256": "1" * 64, "user": "old", "revoked": True, "created_at": 5.0}
    legacy.write_text(json.dumps({"keys": [live, gone]}))
    first = open_state(StateConfig(), data, legacy_keys=legacy)
    assert first.imported is not None and first.imported.imported == ["aaa", "bbb"]
    assert "imported 2 key(s)" in first.imported.summary() and "aaa" in first.imported.summary()
    assert first.keys.get("aaa").groups == ["hr"] and first.keys.get("bbb").revoked  # type: ignore[union-attr]
    first.keys.revoke("aaa")
    again = open_state(StateConfig(), data, legacy_keys=legacy)  # the next start: nothing re-imported
    assert again.imported is not None and again.imported.already_done
    assert again.keys.get("aaa").revoked  # type: ignore[union-attr]  # the import never undid a revocation


def _revoke_all(url: str, key_ids: list[str]) -> None:
    keys = Keys(Database(url))
    for key_id in key_ids:
        keys.revoke(key_id, actor="writer")


def _create_many(url: str, user: str, n: int) -> None:
    keys = Keys(Database(url))
    for _ in range(n):
        keys.create(user)


@pytest.mark.slow
def test_concurrent_writers_lose_no_key_and_no_revocation(database_url: str, tmp_path: Path) -> None:
    """The issue's failure: the CLI and a gateway writing keys.json together lost revocations.
    Here 3 processes revoke, 2 create and the real CLI revokes too, all at once."""
    keys = Keys(Database.open(database_url))
    made = [keys.create(f"u{i}")[1].key_id for i in range(31)]
    cli_target, to_revoke = made[0], made[1:]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_revoke_all, args=(database_url, to_revoke[i::3])) for i in range(3)]
    procs += [ctx.Process(target=_create_many, args=(database_url, f"new{i}", 10)) for i in range(2)]
    for p in procs:
        p.start()
    cfg = tmp_path / "carafe.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\nstate:\n  database_url: {database_url}\n")
    env = {"PYTHONPATH": str(REPO), "CARAFE_TELEMETRY__EXPORTER": "none", "PATH": "/usr/bin:/bin"}
    cli = subprocess.run(
        [sys.executable, "-m", "carafe.cli.main", "keys", "revoke", cli_target, "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert cli.returncode == 0 and f"Revoked key {cli_target}" in cli.stdout, cli.stdout + cli.stderr
    after = {r.key_id: r for r in keys.list()}
    assert all(after[k].revoked for k in made)  # every acknowledged revocation held
    assert sum(1 for r in after.values() if r.user.startswith("new")) == 20  # and every new key


def test_a_revocation_elsewhere_is_refused_here_after_the_cache_ttl(database_url: str) -> None:
    db = Database.open(database_url)
    state = open_state(StateConfig(database_url=database_url), Path("/nonexistent"))
    here = KeyStore(state.keys, state.directory, cache_ttl_s=0.2)
    key, rec = Keys(db).create("ann")
    assert here.authenticate(key) is not None  # read and cached
    Keys(Database(database_url)).revoke(rec.key_id)  # another process revokes
    deadline = time.monotonic() + 5
    while here.authenticate(key) is not None:
        assert time.monotonic() < deadline, "the revocation was never seen"
        time.sleep(0.05)


def test_conversations_belong_to_one_credential_and_expire(database_url: str) -> None:
    db = Database.open(database_url)
    store = Conversations(db, retention_s=3600, max_items=3)
    msgs = [{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": "Hi Ada."}]
    store.put("resp_1", "key:abc", msgs)
    assert store.get("resp_1", "key:abc") == msgs
    assert store.get("resp_1", "key:other") is None  # a new key of the same user is another owner
    for i in range(2, 6):
        store.put(f"resp_{i}", "key:abc", msgs)
    store.prune()
    assert store.get("resp_1", "key:abc") is None and store.get("resp_5", "key:abc") == msgs  # oldest went first
    gone = Conversations(db, retention_s=1e-6, max_items=10)
    gone.put("resp_x", "key:abc", msgs)
    assert gone.get("resp_x", "key:abc") is None  # past its retention


def test_an_unreachable_database_is_unavailable_not_a_crash() -> None:
    from carafe.state import StateUnavailable
    from tests.servers import free_port

    url = f"postgresql+psycopg://carafe:secret-pw@127.0.0.1:{free_port()}/carafe"
    with pytest.raises(StateUnavailable, match="unreachable") as err:
        Keys(Database(url)).get("abc")
    assert "secret-pw" not in err.value.message  # the message never shows the password
    with pytest.raises(StateUnavailable, match="cannot be opened") as err:
        Database.open(url)
    assert "secret-pw" not in err.value.message


def test_cli_sets_budgets_in_the_shared_database(database_url: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from carafe.cli.main import app
    from carafe.state import Budgets

    cfg = tmp_path / "carafe.yaml"
    cfg.write_text(
        f"data_dir: {tmp_path / 'data'}\nstate:\n  database_url: {database_url}\ntelemetry:\n  exporter: none\n"
    )
    ok = CliRunner().invoke(app, ["keys", "budget", "team:support", "--max-tokens", "5000", "--config", str(cfg)])
    assert ok.exit_code == 0 and "5000 tokens per day" in ok.output, ok.output
    assert [(r.scope, r.window, r.max_tokens) for r in Budgets(Database(database_url)).rules()] == [
        ("team:support", "day", 5000)
    ]
    bad = CliRunner().invoke(app, ["keys", "budget", "everyone", "--max-tokens", "1", "--config", str(cfg)])
    assert bad.exit_code != 0 and "key:<id>, user:<name> or team:<name>" in bad.output


def test_state_and_auth_sections_refuse_unknown_keys_and_the_bootstrap_key_compares_whole() -> None:
    from carafe.config import load_config
    from carafe.gateway.auth import bootstrap_matches

    for section in ({"auth": {"oidc": {"isuer": "https://idp"}}}, {"state": {"redis": "redis://x"}}):
        with pytest.raises(Exception, match="isuer|redis"):  # a typo is an error, never silently ignored
            load_config(None, **section)
    assert bootstrap_matches("s3cret-bootstrap", "s3cret-bootstrap")
    assert not bootstrap_matches("s3cret-bootstrax", "s3cret-bootstrap")
    assert not bootstrap_matches("s3cret", "s3cret-bootstrap") and not bootstrap_matches("anything", None)


def test_a_keys_limits_change_in_place_and_every_store_sees_them(database_url: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from carafe.cli.main import app
    from carafe.errors import InvalidInput, NotFound

    state = open_state(StateConfig(database_url=database_url), tmp_path)
    here = KeyStore(state.keys, state.directory, cache_ttl_s=0.2)
    key, rec = Keys(Database(database_url)).create("lee", rpm=10)
    assert here.authenticate(key).rpm == 10  # type: ignore[union-attr]
    cfg = tmp_path / "carafe.yaml"
    cfg.write_text(
        f"data_dir: {tmp_path / 'data'}\nstate:\n  database_url: {database_url}\ntelemetry:\n  exporter: none\n"
    )
    ok = CliRunner().invoke(app, ["keys", "limits", rec.key_id, "--rpm", "3", "--tpm", "900", "--config", str(cfg)])
    assert ok.exit_code == 0 and "rpm 3, tpm 900" in ok.output, ok.output
    deadline = time.monotonic() + 5
    while (p := here.authenticate(key)) is None or (p.rpm, p.tpm) != (3, 900):
        assert time.monotonic() < deadline, "the new limits were never seen"
        time.sleep(0.05)
    assert records.recent(state.db)[0].action == "key.limits"
    with pytest.raises(InvalidInput):
        here.set_limits(rec.key_id, rpm=0)
    here.revoke(rec.key_id)
    with pytest.raises(NotFound):
        here.set_limits(rec.key_id, rpm=5)  # a revoked key is not brought back by a limit change
