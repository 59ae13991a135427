"""The console's activity page: requests, tokens per second, latency and guard actions
over time, drawn from the audit trail (the trace files ``carafe audit`` reads), for
admins and viewers. Only counts and timings: no user, prompt or document appears.

Time is cut into equal buckets (one minute to one day, about 24 over the range);
each bucket shows the requests it saw, the median and 95th-percentile latency, the
mean generation speed (output tokens over the request's duration) and the guard
actions by kind."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from carafe.errors import CarafeError
from carafe.gateway.console.audit import trace_paths
from carafe.gateway.console.charts import Series, bar_chart, line_chart
from carafe.gateway.console.render import gate, page
from carafe.gateway.console.session import require
from carafe.gateway.telemetry import audit as trail

router = APIRouter(include_in_schema=False)
STEPS_S = (60, 300, 900, 3600, 6 * 3600, 86400)
ACTIONS = ("block", "redact", "log")


@dataclass
class Bucket:
    start: datetime
    latencies: list[float] = field(default_factory=list)
    speeds: list[float] = field(default_factory=list)
    actions: Counter[str] = field(default_factory=Counter)

    def row(self, step_s: int) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "start": self.start.isoformat(),
            "label": self.start.strftime("%H:%M" if step_s < 86400 else "%m-%d"),
            "requests": len(lat),
            "latency_p50_ms": round(lat[len(lat) // 2], 1) if lat else None,
            "latency_p95_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.95))], 1) if lat else None,
            "tokens_per_s": round(sum(self.speeds) / len(self.speeds), 1) if self.speeds else None,
            "guard_actions": {a: self.actions[a] for a in ACTIONS},
        }


def _step(span_s: float) -> int:
    return next((s for s in STEPS_S if span_s / s <= 24), STEPS_S[-1])


def since_of(value: str | None, default: str = "24h") -> datetime:
    return trail.parse_when(value or default, param="since")


def requests_since(request: Request, since: datetime) -> list[trail.AuditRecord]:
    """The API requests (not admin actions or console pages) of the trail since ``since``."""
    records = trail.query(trace_paths(request), since=since)
    return [r for r in records if (r.path or "").startswith("/v1/")]


def buckets(records: list[trail.AuditRecord], since: datetime, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    step = _step((now - since).total_seconds())
    origin = datetime.fromtimestamp(since.timestamp() // step * step, UTC)
    count = int((now - origin).total_seconds() // step) + 1
    out = [Bucket(origin + timedelta(seconds=i * step)) for i in range(count)]
    for rec in records:
        when = rec.started_at()
        if when is None:
            continue
        b = out[min(count - 1, max(0, int((when - origin).total_seconds() // step)))]
        if rec.duration_ms:
            b.latencies.append(float(rec.duration_ms))
            if rec.output_tokens:
                b.speeds.append(rec.output_tokens / (float(rec.duration_ms) / 1000))
        b.actions.update(a for _, a in rec.guard_actions)
    return {"step_s": step, "buckets": [b.row(step) for b in out]}


def pictures(series: dict[str, Any]) -> dict[str, Any]:
    rows = series["buckets"]
    labels = [r["label"] for r in rows]
    return {
        "speed": line_chart(
            "Generation speed",
            "Mean output tokens per second of the requests in each period",
            labels,
            [Series("tokens/s", [r["tokens_per_s"] for r in rows])],
            unit="tok/s",
        ),
        "latency": line_chart(
            "Latency",
            "Median and 95th percentile request latency in each period",
            labels,
            [
                Series("p50", [r["latency_p50_ms"] for r in rows]),
                Series("p95", [r["latency_p95_ms"] for r in rows]),
            ],
            unit="ms",
        ),
        "guards": guard_chart(rows),
    }


def guard_chart(rows: list[dict[str, Any]]) -> Any:
    return bar_chart(
        "Guard actions",
        "Requests a guard blocked, redacted or logged in each period",
        [r["label"] for r in rows],
        [Series(a, [r["guard_actions"][a] for r in rows]) for a in ACTIONS],
        unit="requests",
    )


async def activity(request: Request, since: str | None) -> dict[str, Any]:
    start = since_of(since)
    records = await asyncio.to_thread(requests_since, request, start)
    return {"since": start.isoformat(), **buckets(records, start)}


@router.get("/console/activity")
async def activity_page(request: Request, since: str | None = None) -> Response:
    session = gate(request, "activity")
    if isinstance(session, Response):
        return session
    try:
        data = await activity(request, since)
    except CarafeError as exc:
        return page(request, "activity.html", session, status=400, error=exc.message, since=since, data=None)
    return page(request, "activity.html", session, error=None, since=since or "24h", data=data, charts=pictures(data))


@router.get("/console/api/activity")
async def activity_json(request: Request, since: str | None = None) -> dict[str, Any]:
    require(request, "activity")
    return await activity(request, since)
