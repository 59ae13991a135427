"""The console's server-side pictures and the readers behind the activity and tuning
pages: SVG that escapes what it is given and names itself for screen readers, time
buckets over audit records, and a tuning folder read the way the pipeline writes it."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import UTC, datetime, timedelta

from carafe.gateway.console.activity import buckets
from carafe.gateway.console.charts import Series, bar_chart, line_chart
from carafe.gateway.console.tuning import last_run, live
from carafe.gateway.telemetry.audit import AuditRecord


def test_a_bar_chart_escapes_labels_and_draws_one_bar_per_value():
    svg = str(bar_chart("Cells <x>", "desc & more", ["a<b", "c"], [Series("v1", [0.5, 0]), Series("v2", [1, 2])]))
    assert svg.startswith('<svg class="chart"') and 'role="img"' in svg
    assert "<title id=" in svg and "Cells &lt;x&gt;" in svg and "a&lt;b" in svg and "desc &amp; more" in svg
    assert svg.count('<rect class="bar') == 3  # a zero is no bar
    assert "<script" not in svg and "style=" not in svg  # the page's CSP allows neither


def test_a_line_chart_skips_missing_points_and_rounds_its_axis():
    svg = str(line_chart("Latency", "ms", ["1", "2", "3"], [Series("p50", [120.0, None, 180.0])], unit="ms"))
    assert svg.count("<circle") == 2
    ticks = re.findall(r'text-anchor="end">([^<]+)<', svg)
    assert ticks[-1] == "200"  # 180 rounded up to a readable top


def test_buckets_count_latency_speed_and_guard_actions():
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    since = now - timedelta(hours=1)
    records = [
        AuditRecord("a", start=(now - timedelta(minutes=50)).isoformat(), duration_ms=500.0, output_tokens=50),
        AuditRecord("b", start=(now - timedelta(minutes=49)).isoformat(), duration_ms=1000.0, output_tokens=50),
        AuditRecord("c", start=(now - timedelta(minutes=5)).isoformat(), duration_ms=20.0,
                    guard_actions=[("injection", "block")]),
    ]  # fmt: skip
    out = buckets(records, since, now)
    assert out["step_s"] == 300 and len(out["buckets"]) == 13
    first = next(b for b in out["buckets"] if b["requests"] == 2)
    assert first["latency_p50_ms"] == 1000.0 and first["tokens_per_s"] == 75.0  # (100 + 50) / 2
    last = next(b for b in out["buckets"] if b["guard_actions"]["block"])
    assert last["requests"] == 1 and last["tokens_per_s"] is None


def test_a_tuning_folder_read_as_the_pipeline_writes_it(tmp_path):
    assert live(tmp_path) is None and last_run(tmp_path) == {"data": None, "train": None, "eval": None}
    (tmp_path / "train" / "checkpoint").mkdir(parents=True)
    state = {"phase": "skills", "step": 30, "tokens": 6000, "seconds": 12.0}
    (tmp_path / "train" / "checkpoint" / "state.json").write_text(json.dumps(state))
    found = live(tmp_path)
    assert found is not None and (found["phase"], found["step"], found["tokens_per_s"]) == ("skills", 30, 500.0)
    progress = {"stage": "train", "step": 3, "updated_at": time.time(), "pid": 2**22 + 12345}  # no such process
    (tmp_path / "progress.json").write_text(json.dumps(progress))
    found = live(tmp_path)
    assert found is not None and found["source"] == "progress.json" and found["running"] is False
    (tmp_path / "progress.json").write_text(json.dumps({**progress, "pid": os.getpid()}))
    assert live(tmp_path)["running"] is True  # type: ignore[index]
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "train.json").write_text(json.dumps({"metrics": {"cells": {}}, "gate": {"passed": False}}))
    assert last_run(tmp_path)["eval"]["gate"] == {"passed": False}  # type: ignore[index]
