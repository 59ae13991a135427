"""The console's guards page: recent blocks and redactions by check and by route, and
their count over time, from the audit trail (admins and auditors); and a box where an
admin tests a text against a policy, as ``carafe guard test`` does, on the gateway's
own guard pipeline (so the verdicts are the ones requests get). The tested text is
never written to the trace: the admin span records the policy, stage and outcome."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from carafe.errors import CarafeError, Unavailable
from carafe.gateway.console.activity import buckets, guard_chart, requests_since, since_of
from carafe.gateway.console.render import gate, page
from carafe.gateway.console.session import require
from carafe.gateway.deps import get_state
from carafe.gateway.telemetry.attributes import admin_span
from carafe.guards import GuardPipeline, GuardVerdict

router = APIRouter(include_in_schema=False)
SHOWN = ("block", "redact")


class GuardTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(..., min_length=1, max_length=20_000)
    policy: str | None = Field(None, max_length=128)
    stage: Literal["input", "output"] = "input"


def actions(request: Request, since: datetime) -> dict[str, Any]:
    """Blocks and redactions since ``since``: the newest 100, and counts by check and by route."""
    records = requests_since(request, since)
    rows = [
        {"start": r.start, "user": r.user, "route": r.route or r.path, "check": check, "action": action,
         "trace_id": r.trace_id}
        for r in records
        for check, action in r.guard_actions
        if action in SHOWN
    ]  # fmt: skip
    by_check = Counter((row["check"], row["action"]) for row in rows)
    by_route = Counter((row["route"] or "—", row["action"]) for row in rows)
    return {
        "recent": rows[::-1][:100],
        "by_check": [{"check": c, "action": a, "count": n} for (c, a), n in by_check.most_common()],
        "by_route": [{"route": r, "action": a, "count": n} for (r, a), n in by_route.most_common()],
        "over_time": buckets(records, since),
    }


def _verdict(v: GuardVerdict) -> dict[str, Any]:
    return {"check": v.check, "action": v.action, "category": v.category, "score": round(v.score, 3),
            "reason": v.reason, "flagged": v.flagged, "skipped": v.skipped}  # fmt: skip


async def run_test(pipeline: GuardPipeline, body: GuardTest) -> dict[str, Any]:
    """Every check of the policy on the text, as a prompt (input) or as an answer (output)."""
    if body.stage == "input":
        result = await pipeline.check_input(body.text, policy=body.policy)
        text, verdicts, blocked = result.text, result.verdicts, result.blocked
    else:
        stream = pipeline.output_stream(policy=body.policy)
        first = await stream.feed(body.text)
        last = await stream.finish() if first.blocked is None else first
        text = first.text + (last.text if last is not first else "")
        verdicts, blocked = stream.verdicts, stream.blocked
    outcome = "block" if blocked else "redact" if any(v.action == "redact" for v in verdicts) else "allow"
    return {
        "policy": body.policy or pipeline.config.default_policy,
        "stage": body.stage,
        "outcome": outcome,
        "blocked_by": blocked.check if blocked else None,
        "text": None if blocked else text,
        "verdicts": [_verdict(v) for v in verdicts],
    }


@router.get("/console/guards")
async def guards_page(request: Request, since: str | None = None) -> Response:
    session = gate(request, "guards")
    if isinstance(session, Response):
        return session
    state = get_state(request)
    policies = list(state.config.guards.policies)
    context: dict[str, Any] = {"since": since or "7d", "policies": policies, "error": None, "data": None}
    context["default_policy"] = state.config.guards.default_policy
    context["may_test"] = session.may("guards.test") and state.guards is not None
    try:
        context["data"] = await asyncio.to_thread(actions, request, since_of(since, "7d"))
        context["chart"] = guard_chart(context["data"]["over_time"]["buckets"])
    except CarafeError as exc:
        context["error"] = exc.message
    return page(request, "guards.html", session, status=400 if context["error"] else 200, **context)


@router.get("/console/api/guards")
async def guards_json(request: Request, since: str | None = None) -> dict[str, Any]:
    require(request, "guards")
    return await asyncio.to_thread(actions, request, since_of(since, "7d"))


@router.post("/console/api/guards/test")
async def test_json(body: GuardTest, request: Request) -> dict[str, Any]:
    who = require(request, "guards.test", change=True).principal
    pipeline = get_state(request).guards
    if pipeline is None:
        raise Unavailable("the guards are off (guards.enabled: false) or still loading", code="guards_off")
    pipeline.policy(body.policy)  # an unknown policy is a 400 naming the defined ones
    attrs = {"carafe.guard.policy": body.policy or pipeline.config.default_policy, "carafe.guard.stage": body.stage}
    with admin_span("carafe.admin.guards.test", who.user, **attrs) as span:
        result = await run_test(pipeline, body)
        span.set_attribute("carafe.guard.outcome", result["outcome"])
    return result
