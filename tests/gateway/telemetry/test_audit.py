"""Auditing from the trace files alone: who asked, through which adapter, which
documents were shown, what the guards decided — and `carafe audit`."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from carafe.cli.main import app as cli
from carafe.errors import InvalidInput
from carafe.gateway.telemetry import audit
from carafe.gateway.telemetry.setup import Telemetry
from tests.gateway.telemetry.conftest import read_trace_file

LEAVE = "policies:hr/leave.md"
SALARY = "policies:hr/salaries.md"


def _old_trace(when: datetime, user: str, doc: str) -> str:
    """A span line as the exporter wrote it weeks ago (rotated file)."""
    stamp = when.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return (
        json.dumps(
            {
                "trace_id": hashlib.md5(user.encode()).hexdigest(),
                "span_id": "b" * 16,
                "parent_id": None,
                "name": "POST /v1/chat/completions",
                "kind": "SERVER",
                "start": stamp,
                "end": stamp,
                "duration_ms": 1.0,
                "status": {"code": "UNSET"},
                "attributes": {
                    "carafe.principal": user,
                    "carafe.retrieval.doc_ids": [f"{doc}@1"],
                    "http.response.status_code": 200,
                },
                "events": [],
                "resource": {},
            }
        )
        + "\n"
    )


@pytest.fixture
async def trail(client: httpx.AsyncClient, telemetry: Telemetry) -> Path:
    """alice twice and bob once saw the leave policy; carol's request was blocked; an old trace in a rotated file."""
    await client.post("/v1/chat/completions", json={"user": "alice", "adapter": "hr-helper@3", "docs": [f"{LEAVE}@4"]})
    await client.post(
        "/v1/chat/completions",
        json={"user": "alice", "adapter": "hr-helper@3", "docs": [f"{LEAVE}@5", f"{SALARY}@2"], "pii": "redact"},
    )
    await client.post("/v1/chat/completions", json={"user": "bob", "adapter": "base", "docs": [f"{LEAVE}@5"]})
    await client.post("/v1/chat/completions", json={"user": "carol", "adapter": "style@1", "pii": "block"})
    read_trace_file(telemetry)
    path = telemetry.trace_file
    assert path is not None
    path.with_name(path.name + ".1").write_text(_old_trace(datetime.now(UTC) - timedelta(days=30), "mallory", LEAVE))
    return path


async def test_query_by_user_adapter_doc_and_guard_action(trail: Path) -> None:
    assert [r.user for r in audit.query(trail, user="alice")] == ["alice", "alice"]
    assert {r.user for r in audit.query(trail, adapter="hr-helper")} == {"alice"}
    assert {r.user for r in audit.query(trail, adapter="hr-helper@3")} == {"alice"}
    assert audit.query(trail, adapter="hr-helper@9") == []
    assert {r.user for r in audit.query(trail, doc=SALARY)} == {"alice"}
    assert {r.user for r in audit.query(trail, doc=f"{LEAVE}@4")} == {"alice"}
    assert [r.user for r in audit.query(trail, guard_action="block")] == ["carol"]
    redacted = audit.query(trail, guard_action="redact")
    assert [r.user for r in redacted] == ["alice"] and ("pii", "redact") in redacted[0].guard_actions
    rec = audit.query(trail, user="bob")[0]
    assert rec.status == 200 and rec.path == "/v1/chat/completions" and rec.adapter == "base"
    assert rec.doc_ids == [f"{LEAVE}@5"] and len(rec.trace_id) == 32


async def test_time_range_reaches_into_rotated_files(trail: Path) -> None:
    everyone = {r.user for r in audit.query(trail)}
    assert everyone == {"alice", "bob", "carol", "mallory"}
    recent = audit.query(trail, since=audit.parse_when("7d"))
    assert "mallory" not in {r.user for r in recent} and len(recent) == 4
    old = audit.query(trail, until=audit.parse_when("7d"))
    assert [r.user for r in old] == ["mallory"]


async def test_who_was_shown_a_document(trail: Path) -> None:
    shown = audit.who_was_shown(trail, LEAVE, since=audit.parse_when("7d"))
    assert [(e.user, e.times) for e in shown] == [("alice", 2), ("bob", 1)]
    assert shown[0].versions == ["4", "5"] and len(shown[0].trace_ids) == 2
    assert {e.user for e in audit.who_was_shown(trail, LEAVE)} == {"alice", "bob", "mallory"}
    assert audit.who_was_shown(trail, "policies:nobody.md") == []


def test_parse_when_reads_durations_and_dates() -> None:
    now = datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert audit.parse_when("7d", now=now) == now - timedelta(days=7)
    assert audit.parse_when("90m", now=now) == now - timedelta(minutes=90)
    assert audit.parse_when("2026-01-01") == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="7d"):
        audit.parse_when("last tuesday")


def test_torn_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    path.write_text(_old_trace(datetime.now(UTC), "dave", LEAVE) + '{"trace_id": "cut off in the mid')
    assert [r.user for r in audit.query(path)] == ["dave"]


async def test_cli_lists_and_answers_who_was_shown(trail: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["audit", "--file", str(trail), "--user", "alice", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["user"] for r in rows] == ["alice", "alice"] and rows[1]["guard_actions"][0]["check"] == "pii"
    res = runner.invoke(cli, ["audit", "--file", str(trail), "--guard-action", "block"])
    assert res.exit_code == 0 and "carol" in res.stdout and "alice" not in res.stdout
    res = runner.invoke(cli, ["audit", "doc", LEAVE, "--since", "7d", "--file", str(trail), "--json"])
    assert res.exit_code == 0, res.output
    assert [(e["user"], e["times"]) for e in json.loads(res.stdout)] == [("alice", 2), ("bob", 1)]
    res = runner.invoke(cli, ["audit", "doc", LEAVE, "--since", "7d", "--file", str(trail)])
    assert res.exit_code == 0 and "alice" in res.stdout and "mallory" not in res.stdout


def test_cli_explains_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["audit", "--file", str(tmp_path / "none.jsonl")])
    assert res.exit_code == 1 and "no trace file" in res.output
    (tmp_path / "t.jsonl").write_text("")
    res = runner.invoke(cli, ["audit", "--file", str(tmp_path / "t.jsonl"), "--since", "someday"])
    assert res.exit_code == 2 and "--since" in res.output


async def test_cli_reads_one_file_per_replica(trail: Path, tmp_path: Path) -> None:
    replica = tmp_path / "gateway-2.jsonl"
    replica.write_text(_old_trace(datetime.now(UTC) - timedelta(hours=1), "zoe", LEAVE))
    res = CliRunner().invoke(
        cli, ["audit", "doc", LEAVE, "--since", "7d", "--file", str(trail), "--file", str(replica), "--json"]
    )
    assert res.exit_code == 0, res.output
    assert {e["user"] for e in json.loads(res.stdout)} == {"alice", "bob", "zoe"}
