"""The audit trail read back from the JSON-lines trace files (rotated ones included).

Spans are grouped into one ``AuditRecord`` per trace: who asked (principal),
through which route and adapter@version, which documents were retrieved, what
each guard decided, tokens and status. ``query`` filters them;
``who_was_shown`` answers "who was shown document X since 7d".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from carafe.errors import InvalidInput
from carafe.gateway.telemetry import attributes as attr

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_GUARD_ACTION = re.compile(r"^carafe\.guard\.([^.]+)\.action$")


def parse_when(text: str, *, param: str = "since", now: datetime | None = None) -> datetime:
    """``7d`` / ``12h`` / ``30m`` / ``2w`` (that long ago) or an ISO date/time (UTC if no zone)."""
    now = now or datetime.now(UTC)
    m = _DURATION.match(text)
    if m:
        return now - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"cannot read time {text!r}: use a duration like 7d, 12h, 30m, 2w or an ISO date like 2026-01-31T12:00",
            param=param,
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def trace_files(path: Path) -> list[Path]:
    """``traces.jsonl`` and its rotated siblings, oldest first."""
    path = Path(path)
    rotated = []
    for p in path.parent.glob(path.name + ".*"):
        suffix = p.name[len(path.name) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), p))
    files = [p for _, p in sorted(rotated, reverse=True)]
    if path.is_file():
        files.append(path)
    return files


TracePaths = Path | Sequence[Path]


def _all_files(paths: TracePaths) -> list[Path]:
    bases = [paths] if isinstance(paths, str | Path) else list(paths)
    return [f for base in bases for f in trace_files(Path(base))]


def read_spans(paths: TracePaths) -> Iterator[dict[str, Any]]:
    """Every span in the trace files (several bases: one per gateway replica); a torn or foreign line is skipped."""
    for file in _all_files(paths):
        with open(file, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    span = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(span, dict) and "trace_id" in span:
                    yield span


@dataclass
class AuditRecord:
    """What one trace (one request or admin action) tells an auditor."""

    trace_id: str
    start: str | None = None
    name: str | None = None
    path: str | None = None
    status: int | None = None
    user: str | None = None
    route: str | None = None
    model: str | None = None
    adapter: str | None = None
    doc_ids: list[str] = field(default_factory=list)
    guard_actions: list[tuple[str, str]] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    prompt_sha256: str | None = None
    duration_ms: float | None = None

    @property
    def documents(self) -> set[str]:
        """Document ids without their ``@version``."""
        return {d.rsplit("@", 1)[0] for d in self.doc_ids}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["guard_actions"] = [{"check": c, "action": a} for c, a in self.guard_actions]
        return data

    def started_at(self) -> datetime | None:
        return datetime.fromisoformat(self.start.replace("Z", "+00:00")) if self.start else None


def _absorb(rec: AuditRecord, span: dict[str, Any]) -> None:
    attrs: dict[str, Any] = span.get("attributes") or {}
    if span.get("parent_id") is None or span.get("kind") == "SERVER":
        rec.name, rec.duration_ms = span.get("name"), span.get("duration_ms")
        rec.path = attrs.get(attr.URL_PATH, rec.path)
        rec.status = attrs.get(attr.HTTP_RESPONSE_STATUS_CODE, rec.status)
    start = span.get("start")
    if start and (rec.start is None or start < rec.start):
        rec.start = start
    rec.user = attrs.get(attr.CARAFE_PRINCIPAL, rec.user)
    rec.route = attrs.get(attr.CARAFE_ROUTE, rec.route)
    rec.model = attrs.get(attr.GEN_AI_REQUEST_MODEL, rec.model)
    adapter = (
        attrs.get(attr.CARAFE_ADAPTER_VERSION)
        or attrs.get(attr.GEN_AI_RESPONSE_MODEL)
        or attrs.get(attr.CARAFE_ADAPTER_NAME)
    )  # an admin change to a whole adapter (rollback, remove)
    if adapter:
        rec.adapter = str(adapter)
    # gen_ai.data_source.id names the store (collection), not a document: only carafe.retrieval.doc_ids counts
    value = attrs.get(attr.CARAFE_RETRIEVAL_DOC_IDS)
    for doc in value if isinstance(value, list) else [value] if value else []:
        if doc not in rec.doc_ids:
            rec.doc_ids.append(str(doc))
    rec.input_tokens = attrs.get(attr.GEN_AI_USAGE_INPUT_TOKENS, rec.input_tokens)
    rec.output_tokens = attrs.get(attr.GEN_AI_USAGE_OUTPUT_TOKENS, rec.output_tokens)
    rec.prompt_sha256 = attrs.get(attr.CARAFE_PROMPT_SHA256, rec.prompt_sha256)
    sources = [attrs] + [e.get("attributes") or {} for e in span.get("events") or []]
    for source in sources:
        for key, value in source.items():
            m = _GUARD_ACTION.match(key)
            if m and (m.group(1), str(value)) not in rec.guard_actions:
                rec.guard_actions.append((m.group(1), str(value)))
    blocked = attrs.get(attr.CARAFE_GUARD_BLOCKED)
    if blocked and (str(blocked), "block") not in rec.guard_actions:
        rec.guard_actions.append((str(blocked), "block"))


def records(spans: Iterable[dict[str, Any]]) -> list[AuditRecord]:
    """Group spans into one record per trace, oldest first."""
    by_trace: dict[str, AuditRecord] = {}
    for span in spans:
        tid = span.get("trace_id")
        if not tid:
            continue
        rec = by_trace.get(tid)
        if rec is None:
            rec = by_trace[tid] = AuditRecord(trace_id=tid)
        _absorb(rec, span)
    return sorted(by_trace.values(), key=lambda r: r.start or "")


def _adapter_matches(rec: AuditRecord, adapter: str) -> bool:
    served = rec.adapter or ""
    return served == adapter or served.split("@", 1)[0] == adapter


def query(
    path: TracePaths,
    *,
    user: str | None = None,
    adapter: str | None = None,
    doc: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    guard_action: str | None = None,
) -> list[AuditRecord]:
    """Records matching every given filter (``doc`` with or without ``@version``)."""
    out = []
    for rec in records(read_spans(path)):
        when = rec.started_at()
        if since is not None and (when is None or when < since):
            continue
        if until is not None and (when is None or when > until):
            continue
        if user is not None and rec.user != user:
            continue
        if adapter is not None and not _adapter_matches(rec, adapter):
            continue
        if doc is not None and doc not in rec.doc_ids and doc not in rec.documents:
            continue
        if guard_action is not None and all(a != guard_action for _, a in rec.guard_actions):
            continue
        out.append(rec)
    return out


@dataclass
class Exposure:
    """One user's exposure to a document."""

    user: str
    times: int
    first: str | None
    last: str | None
    versions: list[str]
    trace_ids: list[str]


def who_was_shown(
    path: TracePaths, doc: str, *, since: datetime | None = None, until: datetime | None = None
) -> list[Exposure]:
    """Who was shown ``doc`` (retrieved into their prompt) in the time range, most exposures first."""
    by_user: dict[str, Exposure] = {}
    for rec in query(path, doc=doc, since=since, until=until):
        user = rec.user or "(unknown)"
        exp = by_user.setdefault(user, Exposure(user, 0, rec.start, rec.start, [], []))
        exp.times += 1
        exp.last = rec.start
        exp.trace_ids.append(rec.trace_id)
        for d in rec.doc_ids:
            name, _, version = d.rpartition("@")
            if (d == doc or name == doc) and version and version not in exp.versions:
                exp.versions.append(version)
    return sorted(by_user.values(), key=lambda e: (-e.times, e.user))
