"""Pictures for the console, drawn on the server as inline SVG: no chart library, no
script, nothing from a CDN (the page's CSP allows none of it).

A line chart over time (tokens/s, latency) and a grouped bar chart (guard actions
per hour, the four evaluation cells). Every chart carries ``role="img"``, a title and
a description, and its page shows the same numbers as a table beside it; colours
come from classes in ``console.css`` (``series-0`` …), never inline styles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 24, 40


@dataclass(frozen=True, slots=True)
class Series:
    """One named line or bar colour: a value per x label (None: no value there)."""

    name: str
    values: Sequence[float | None]


def _nice_max(value: float) -> float:
    """A round top for the y axis (1, 2, 5 × 10^n) at or above ``value``."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value))) / 10 if value >= 1 else 0.1
    while magnitude * 10 < value:
        magnitude *= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return float(step * magnitude)
    return float(10 * magnitude)


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.2g}"


def _frame(
    title: str, desc: str, top: float, unit: str, labels: Sequence[str], body: list[str], names: list[str]
) -> Markup:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT + 18 * ((len(names) + 2) // 3)}" role="img" '
        f'aria-labelledby="{_id(title)}-t {_id(title)}-d">',
        f'<title id="{_id(title)}-t">{escape(title)}</title><desc id="{_id(title)}-d">{escape(desc)}</desc>',
    ]
    for i in range(5):  # y grid and ticks
        y = TOP + plot_h * (1 - i / 4)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(top * i / 4)}</text>')
    parts.append(f'<text class="unit" x="4" y="12">{escape(unit)}</text>')
    every = max(1, len(labels) // 8)
    for i, label in enumerate(labels):
        if i % every == 0:
            x = LEFT + plot_w * (i + 0.5) / max(1, len(labels))
            parts.append(
                f'<text class="tick" x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{escape(label)}</text>'
            )
    parts += body
    for i, name in enumerate(names):  # legend
        x, y = LEFT + (i % 3) * 190, HEIGHT + 4 + 18 * (i // 3)
        parts.append(f'<rect class="series-{i}" x="{x}" y="{y}" width="12" height="12"/>')
        parts.append(f'<text class="legend" x="{x + 18}" y="{y + 11}">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _id(title: str) -> str:
    return "chart-" + "".join(c if c.isalnum() else "-" for c in title.lower())[:40]


def line_chart(title: str, desc: str, labels: Sequence[str], series: Sequence[Series], unit: str = "") -> Markup:
    """Lines (with a dot per point) over ``labels`` (time buckets, oldest first)."""
    top = _nice_max(max((v for s in series for v in s.values if v is not None), default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    body: list[str] = []
    for n, s in enumerate(series):
        points = [
            (LEFT + plot_w * (i + 0.5) / max(1, len(labels)), TOP + plot_h * (1 - v / top))
            for i, v in enumerate(s.values)
            if v is not None
        ]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            body.append(f'<polyline class="line series-{n}" points="{path}"/>')
        body += [f'<circle class="dot series-{n}" cx="{x:.1f}" cy="{y:.1f}" r="3"/>' for x, y in points]
    return _frame(title, desc, top, unit, labels, body, [s.name for s in series])


def bar_chart(title: str, desc: str, labels: Sequence[str], series: Sequence[Series], unit: str = "") -> Markup:
    """Grouped bars: one group per label, one bar per series."""
    top = _nice_max(max((v for s in series for v in s.values if v is not None), default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    group = plot_w / max(1, len(labels))
    bar = group * 0.8 / max(1, len(series))
    body: list[str] = []
    for n, s in enumerate(series):
        for i, v in enumerate(s.values):
            if not v:
                continue
            h = plot_h * v / top
            x = LEFT + group * i + group * 0.1 + bar * n
            box = f'x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}"'
            tip = f"{escape(s.name)} {escape(labels[i])}: {_fmt(v)}"
            body.append(f'<rect class="bar series-{n}" {box}><title>{tip}</title></rect>')
    return _frame(title, desc, top, unit, labels, body, [s.name for s in series])
