"""The console's audit pages, over the same trace files and queries as `carafe audit`:
who was shown a document in a time range, one user's history, one request's trace as
a timeline, and CSV export of either list. Auditors and admins only."""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from carafe.errors import CarafeError, InvalidInput, NotFound
from carafe.gateway.console.render import HEADERS, gate, page
from carafe.gateway.console.session import require
from carafe.gateway.deps import get_state
from carafe.gateway.telemetry import audit as trail

router = APIRouter(include_in_schema=False)
CSV_FIELDS = ("trace_id", "start", "user", "path", "status", "route", "adapter", "doc_ids", "guard_actions")


def trace_paths(request: Request) -> list[Path]:
    cfg = get_state(request).config
    return [cfg.telemetry.file_path or cfg.data_dir / "traces" / "traces.jsonl"]


def _when(value: str | None, param: str) -> datetime | None:
    return trail.parse_when(value, param=param) if value else None


async def exposures(request: Request, doc: str, since: str | None, until: str | None) -> list[dict[str, Any]]:
    """Who was shown ``doc`` (retrieved into their prompt) in the range, most exposures first."""
    found = await asyncio.to_thread(
        trail.who_was_shown, trace_paths(request), doc, since=_when(since, "since"), until=_when(until, "until")
    )
    return [vars(e) for e in found]


async def history(request: Request, user: str, since: str | None, until: str | None) -> list[dict[str, Any]]:
    """Every request and admin action of ``user`` in the range, oldest first."""
    found = await asyncio.to_thread(
        trail.query, trace_paths(request), user=user, since=_when(since, "since"), until=_when(until, "until")
    )
    return [r.to_dict() for r in found]


def _row(span: dict[str, Any], t0: datetime) -> dict[str, Any]:
    start = datetime.fromisoformat(str(span["start"]).replace("Z", "+00:00"))
    attrs = span.get("attributes") or {}
    status = span.get("status")
    return {
        "name": span.get("name"),
        "offset_ms": round((start - t0).total_seconds() * 1000, 2),
        "duration_ms": round(float(span.get("duration_ms") or 0.0), 2),
        "status": status.get("code") if isinstance(status, dict) else status,
        "attributes": {k: v for k, v in attrs.items() if k.startswith(("carafe.", "gen_ai.", "http."))},
    }


def _timeline(trace_id: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
    spans.sort(key=lambda s: str(s.get("start", "")))
    t0 = datetime.fromisoformat(str(spans[0]["start"]).replace("Z", "+00:00"))
    rows = [_row(s, t0) for s in spans]
    total = max((float(r["offset_ms"]) + float(r["duration_ms"]) for r in rows), default=0.0) or 1.0
    return {"trace_id": trace_id, "record": trail.records(spans)[0].to_dict(), "total_ms": total, "spans": rows}


async def timeline(request: Request, trace_id: str) -> dict[str, Any]:
    """One trace's spans in start order, offsets from its first span (auth → … → output guards)."""
    trace_id = trace_id.strip().lower()
    spans = await asyncio.to_thread(
        lambda: [s for s in trail.read_spans(trace_paths(request)) if s.get("trace_id") == trace_id and s.get("start")]
    )
    if not spans:
        raise NotFound(f"no trace {trace_id!r} in the audit trail", param="trace_id")
    return _timeline(trace_id, spans)


def _cell(value: Any) -> Any:
    """Lists joined with ``;``; text a spreadsheet would run as a formula (``=``, ``+``, ``-``,
    ``@``: user names and document ids come from outside) is quoted with a leading ``'``."""
    if isinstance(value, list):
        value = ";".join(map(str, value))
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else list(CSV_FIELDS), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return out.getvalue()


@dataclass
class Filters:
    """What an audit list is about: a document (who was shown it) or a user (their history), and when."""

    doc: str | None = None
    user: str | None = None
    since: str | None = None
    until: str | None = None

    @classmethod
    def of(cls, params: dict[str, str]) -> Filters:
        return cls(*(params.get(k) or None for k in ("doc", "user", "since", "until")))


async def _query(request: Request, f: Filters) -> tuple[str, list[dict[str, Any]]]:
    if f.doc:
        return "doc", await exposures(request, f.doc, f.since, f.until)
    if f.user:
        return "user", await history(request, f.user, f.since, f.until)
    raise InvalidInput("give a document id (doc) or a user (user)", param="doc")


@router.get("/console/audit")
async def audit_page(request: Request) -> Response:
    session = gate(request, "audit")
    if isinstance(session, Response):
        return session
    params = dict(request.query_params)
    context: dict[str, Any] = {"params": params, "error": None, "kind": None, "rows": [], "trace": None}
    try:
        if params.get("trace_id"):
            context["trace"] = await timeline(request, params["trace_id"])
        elif params.get("doc") or params.get("user"):
            context["kind"], context["rows"] = await _query(request, Filters.of(params))
    except CarafeError as exc:
        context["error"] = exc.message
    return page(request, "audit.html", session, status=400 if context["error"] else 200, **context)


@router.get("/console/api/audit")
async def audit_json(request: Request, filters: Annotated[Filters, Depends()]) -> dict[str, Any]:
    require(request, "audit")
    kind, rows = await _query(request, filters)
    return {"object": "list", "kind": kind, "data": rows}


@router.get("/console/api/audit/trace/{trace_id}")
async def trace_json(trace_id: str, request: Request) -> dict[str, Any]:
    require(request, "audit")
    return await timeline(request, trace_id)


@router.get("/console/api/audit/export.csv")
async def export_csv(request: Request, filters: Annotated[Filters, Depends()]) -> Response:
    require(request, "audit")
    kind, rows = await _query(request, filters)
    name = f"carafe-audit-{kind}.csv"
    headers = {**HEADERS, "Content-Disposition": f'attachment; filename="{name}"'}
    return Response(to_csv(rows), media_type="text/csv; charset=utf-8", headers=headers)
