"""Issue 29 H4: the caller cannot steer the audit trail with ``traceparent``.

Reproduced the way the attack was shown, over real HTTP against real gateways:
flags ``00`` on an admin action, one chosen trace id reused by two users so that
``carafe audit doc`` would list the wrong user as shown a document.
"""

from __future__ import annotations

import httpx

from carafe.gateway.telemetry import audit
from carafe.gateway.telemetry.middleware import TRACE_ID_HEADER
from carafe.gateway.telemetry.setup import Telemetry
from tests.gateway.conftest import BASE_MODEL, Gateway, RagGateway
from tests.gateway.telemetry.conftest import read_trace_file

CHOSEN = "4bf92f3577b34da6a3ce929d0e0e4736"


def traceparent(flags: str, span: str = "00f067aa0ba902b7") -> dict[str, str]:
    return {"traceparent": f"00-{CHOSEN}-{span}-{flags}"}


def test_unsampled_traceparent_still_leaves_an_admin_record(gateway: Gateway, telemetry: Telemetry) -> None:
    r = httpx.post(
        f"{gateway.url}/admin/keys",
        json={"user": "sneaky-admin", "admin": True},
        headers={"Authorization": f"Bearer {gateway.admin_key}", **traceparent("00")},
    )
    assert r.status_code == 200, r.text
    ours = r.headers[TRACE_ID_HEADER]
    assert ours != CHOSEN and r.headers["traceparent"].endswith("-01")
    spans = [s for s in read_trace_file(telemetry) if s["trace_id"] == ours]
    assert any(s["name"] == "carafe.admin.keys.create" for s in spans)
    root = next(s for s in spans if s["kind"] == "SERVER")
    assert root["parent_id"] is None
    assert root["links"] == [{"trace_id": CHOSEN, "span_id": "00f067aa0ba902b7"}]
    assert root["attributes"]["carafe.inbound.traceparent"] == f"00-{CHOSEN}-00f067aa0ba902b7-00"
    assert not any(s["trace_id"] == CHOSEN for s in read_trace_file(telemetry))


def test_one_trace_id_sent_twice_gives_two_records(gateway: Gateway, telemetry: Telemetry) -> None:
    ids = []
    for span in ("00f067aa0ba902b7", "00f067aa0ba902b8"):
        r = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": BASE_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            headers={"Authorization": f"Bearer {gateway.user_key}", **traceparent("01", span)},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        ids.append(r.headers[TRACE_ID_HEADER])
    assert len(set(ids)) == 2 and CHOSEN not in ids
    read_trace_file(telemetry)
    recs = [rec for rec in audit.query(telemetry.trace_file, user="alice") if rec.trace_id in ids]
    assert len(recs) == 2


def test_audit_never_attributes_another_users_retrieval(rag: RagGateway, telemetry: Telemetry) -> None:
    for user, question in (("hana", "What is the bonus approval code?"), ("finn", "What is the ledger unlock code?")):
        r = httpx.post(
            f"{rag.url}/v1/chat/completions",
            json={"model": BASE_MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": 2},
            headers={"Authorization": f"Bearer {rag.keys[user]}", **traceparent("01")},
            timeout=60,
        )
        assert r.status_code == 200, r.text
    read_trace_file(telemetry)
    shown = {e.user for e in audit.who_was_shown(telemetry.trace_file, "docs:hr/bonus.md")}
    assert shown == {"hana"}
