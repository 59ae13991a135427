"""The console's tuning runs page (admins and viewers): the run in the tuning output
folder (``tuning.output_dir``, default ``<data_dir>/tuning``) — which stages are done,
and while ``carafe tune`` trains, its phase, step, loss and tokens/s — the versions
published from past runs with their evaluation and gate, and two versions of an
adapter side by side (manifest and evaluation, with the four cells as a chart).

The gateway does not import the tuning package; it reads the files the pipeline
writes (``carafe.tuning.pipeline``'s layout):

- ``data/stamp.json`` (samples, teacher, data digest), ``train/stamp.json`` (per-phase
  steps, tokens/s, final loss), ``eval/train.json`` (metrics, gate);
- ``train/checkpoint/state.json`` while training (phase, step, tokens, seconds);
- ``progress.json``, which ``carafe tune`` keeps current (``carafe.tuning.progress``):
  ``{"stage", "phase", "step", "total", "loss", "tokens_per_s", "updated_at", "pid",
  "losses": [[step, loss], ...]}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from carafe.errors import NotFound
from carafe.gateway.admin_adapters import adapter_detail
from carafe.gateway.console.charts import Series, bar_chart, line_chart
from carafe.gateway.console.render import gate, page
from carafe.gateway.console.session import require
from carafe.gateway.deps import get_state
from carafe.gateway.state import AppState

router = APIRouter(include_in_schema=False)
CELLS = ("base", "adapter", "base+rag", "adapter+rag")
STALE_S = 120.0  # a progress file not touched for this long belongs to a run that stopped


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live(out: Path) -> dict[str, Any] | None:
    """The training in progress: the CLI's progress file, else the last checkpoint's state."""
    progress = _json(out / "progress.json")
    if progress is not None and progress.get("stage") not in ("done", "failed"):
        age = time.time() - float(progress.get("updated_at") or 0)
        running = _alive(progress.get("pid")) if "pid" in progress else age < STALE_S
        return {**progress, "running": running and age < STALE_S, "source": "progress.json"}
    state = _json(out / "train" / "checkpoint" / "state.json")
    if state is None:
        return None
    seconds = float(state.get("seconds") or 0)
    age = time.time() - (out / "train" / "checkpoint" / "state.json").stat().st_mtime
    return {
        "stage": "train",
        "phase": state.get("phase"),
        "step": state.get("step"),
        "tokens_per_s": round(float(state.get("tokens") or 0) / seconds, 1) if seconds else None,
        "running": age < STALE_S,
        "source": "checkpoint",
    }


def last_run(out: Path) -> dict[str, Any]:
    """What each stage of the run in ``out`` left behind."""
    data, train = _json(out / "data" / "stamp.json"), _json(out / "train" / "stamp.json")
    evaluation = _json(out / "eval" / "train.json")
    return {
        "data": {k: data.get(k) for k in ("samples", "teacher", "data_sha256", "seconds", "by_phase")}
        if data
        else None,
        "train": {k: train.get(k) for k in ("phases", "seconds", "replay")} if train else None,
        "eval": {k: evaluation.get(k) for k in ("metrics", "gate", "seconds")} if evaluation else None,
    }


def published(state: AppState) -> list[dict[str, Any]]:
    """Every version in the registry with its evaluation, newest first."""
    rows = []
    for name in state.registry.names():
        detail = adapter_detail(state.registry, state.adapters, name, history=0)
        for v, m in detail["manifests"].items():
            metrics = m.get("metrics") or {}
            rows.append({"name": name, "version": v, "created_at": m.get("created_at"), "kind": m.get("kind"),
                         "teacher": m.get("teacher"), "data": m.get("data"), "metrics": metrics,
                         "gate": metrics.get("gate"), "stable": v == detail["stable"]})  # fmt: skip
    return sorted(rows, key=lambda r: str(r["created_at"] or ""), reverse=True)


def overview(state: AppState) -> dict[str, Any]:
    out = state.config.tuning.out_dir(state.config.data_dir)
    return {"output_dir": str(out), "live": live(out), "last_run": last_run(out), "published": published(state)}


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in _flat(f"{prefix}.{key}" if prefix else key, sub).items()}
    return {prefix: value}


def compare(state: AppState, name: str, a: int, b: int) -> dict[str, Any]:
    """Two versions' manifests field by field (hyperparameters and metrics flattened)."""
    manifests = adapter_detail(state.registry, state.adapters, name, history=0)["manifests"]
    for v in (a, b):
        if v not in manifests:
            raise NotFound(f"{name} has no version {v} (versions: {', '.join(map(str, manifests))})", param="b")
    left, right = _flat("", manifests[a]), _flat("", manifests[b])
    skip = ("version", "created_at", "adapter_digest")
    rows = [
        {"field": k, "a": left.get(k), "b": right.get(k), "differs": left.get(k) != right.get(k)}
        for k in sorted(set(left) | set(right))
        if not k.startswith(skip)
    ]
    return {"name": name, "a": a, "b": b, "rows": rows, "cells": {v: cells(manifests[v]) for v in (a, b)}}


def cells(manifest: dict[str, Any]) -> dict[str, Any] | None:
    found = (manifest.get("metrics") or {}).get("cells")
    return found if isinstance(found, dict) and all(c in found for c in CELLS) else None


def cells_chart(title: str, by_version: dict[str, dict[str, Any]]) -> Any:
    """Key-fact accuracy of the four cells, one colour per version."""
    return bar_chart(
        title,
        "Share of held-out answers carrying every key fact: base, adapter, base + RAG, adapter + RAG",
        ["base", "adapter", "base + RAG", "adapter + RAG"],
        [Series(label, [100 * float(c[cell]) for cell in CELLS]) for label, c in by_version.items()],
        unit="%",
    )


def loss_chart(progress: dict[str, Any]) -> Any:
    points = [p for p in progress.get("losses") or [] if isinstance(p, list) and len(p) == 2]
    if len(points) < 2:
        return None
    return line_chart(
        "Training loss", "Loss at each step of the running phase", [str(s) for s, _ in points],
        [Series("loss", [float(v) for _, v in points])],
    )  # fmt: skip


def pictures(data: dict[str, Any], comparison: dict[str, Any] | None) -> dict[str, Any]:
    charts: dict[str, Any] = {}
    if data["live"]:
        charts["loss"] = loss_chart(data["live"])
    latest = next((r for r in data["published"] if cells({"metrics": r["metrics"]})), None)
    if latest:
        charts["cells"] = cells_chart(
            f"Evaluation of {latest['name']} {latest['version']}", {"key-fact accuracy": latest["metrics"]["cells"]}
        )
    if comparison and all(comparison["cells"].values()):
        by = {f"version {v}": c for v, c in comparison["cells"].items()}
        charts["compare"] = cells_chart(f"{comparison['name']} {comparison['a']} and {comparison['b']}", by)
    return charts


@router.get("/console/tuning")
async def tuning_page(
    request: Request, name: str | None = None, a: int | None = None, b: int | None = None
) -> Response:
    session = gate(request, "tuning")
    if isinstance(session, Response):
        return session
    state = get_state(request)
    data = await asyncio.to_thread(overview, state)
    comparison, error = None, None
    if name and a and b:
        try:
            comparison = await asyncio.to_thread(compare, state, name, a, b)
        except NotFound as exc:
            error = exc.message
    context = {"comparison": comparison, "error": error, "params": {"name": name, "a": a, "b": b}}
    charts = pictures(data, comparison)
    return page(request, "tuning.html", session, status=404 if error else 200, charts=charts, **data, **context)


@router.get("/console/api/tuning")
async def tuning_json(request: Request) -> dict[str, Any]:
    require(request, "tuning")
    return await asyncio.to_thread(overview, get_state(request))


@router.get("/console/api/tuning/compare")
async def compare_json(name: str, a: int, b: int, request: Request) -> dict[str, Any]:
    require(request, "tuning")
    return await asyncio.to_thread(compare, get_state(request), name, a, b)
