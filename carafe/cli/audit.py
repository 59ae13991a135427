"""`carafe audit`: query the audit trail (the JSON-lines trace files)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer
from rich.table import Table

from carafe.cli.common import ConfigOption, JsonOption, config_or_exit, console, fail, print_json
from carafe.errors import CarafeError
from carafe.gateway.telemetry import audit as trail

app = typer.Typer(invoke_without_command=True)

FileOption = typer.Option(
    None,
    "--file",
    "-f",
    help="Trace file, repeatable: one per replica (default: telemetry.file_path or <data_dir>/traces/traces.jsonl)",
)
SinceOption = typer.Option(None, "--since", help="From this long ago (7d, 12h, 30m, 2w) or an ISO date")
UntilOption = typer.Option(None, "--until", help="Up to this long ago or an ISO date")


def _trace_files(config: Path | None, files: list[Path] | None) -> list[Path]:
    if files:
        paths = list(files)
    else:
        cfg = config_or_exit(config)
        if cfg.telemetry.exporter != "file" and cfg.telemetry.file_path is None:
            console.print(
                f"[yellow]note:[/] telemetry.exporter is {cfg.telemetry.exporter!r}; "
                "this process writes no trace file — query your collector's backend (Jaeger/Tempo) instead"
            )
        paths = [cfg.telemetry.file_path or cfg.data_dir / "traces" / "traces.jsonl"]
    for path in paths:
        if not trail.trace_files(path):
            fail(f"no trace file at {path}: start the gateway with telemetry.exporter: file, or pass --file")
    return paths


def _when(text: str | None, param: str) -> datetime | None:
    if text is None:
        return None
    try:
        return trail.parse_when(text, param=param)
    except CarafeError as exc:
        fail(f"--{param}: {exc.message}", 2)


@app.callback()
def search(
    ctx: typer.Context,
    user: str | None = typer.Option(None, "--user", "-u", help="Only requests by this user"),
    adapter: str | None = typer.Option(
        None,
        "--adapter",
        "-a",
        help="Only requests served by, or admin changes to, this adapter (name or name@version)",
    ),
    doc: str | None = typer.Option(
        None, "--doc", "-d", help="Only requests that retrieved this document (id or id@version)"
    ),
    since: str | None = SinceOption,
    until: str | None = UntilOption,
    guard_action: str | None = typer.Option(
        None, "--guard-action", "-g", help="Only requests where a guard took this action (block, redact, flag...)"
    ),
    limit: int = typer.Option(200, "--limit", "-n", min=1, help="Show at most this many (newest)"),
    file: list[Path] | None = FileOption,
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """List audited requests: who asked, route, adapter@version, documents shown, guard decisions."""
    if ctx.invoked_subcommand is not None:
        return
    paths = _trace_files(config, file)
    found = trail.query(
        paths,
        user=user,
        adapter=adapter,
        doc=doc,
        since=_when(since, "since"),
        until=_when(until, "until"),
        guard_action=guard_action,
    )[-limit:]
    if as_json:
        print_json([r.to_dict() for r in found])
        return
    table = Table(
        "time (UTC)",
        "user",
        "request",
        "status",
        "adapter",
        "documents",
        "guards",
        "tokens in/out",
        "trace id",
        title=f"{len(found)} audited request(s) in {', '.join(map(str, paths))}",
    )
    for r in found:
        guards = ", ".join(f"{c}:{a}" for c, a in r.guard_actions if a not in ("allow", "pass", "skip"))
        tokens = f"{r.input_tokens}/{r.output_tokens}" if r.input_tokens is not None else ""
        table.add_row(
            (r.start or "")[:19].replace("T", " "),
            r.user or "",
            r.name or "",
            str(r.status or ""),
            r.adapter or "",
            "\n".join(r.doc_ids),
            guards,
            tokens,
            r.trace_id,
        )
    console.print(table)


@app.command("doc")
def doc_exposure(
    doc_id: str = typer.Argument(..., help="Document id (e.g. policies:hr/leave.md), optionally @version"),
    since: str | None = SinceOption,
    until: str | None = UntilOption,
    file: list[Path] | None = FileOption,
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Who was shown a document: users whose requests retrieved it, how often, which versions."""
    paths = _trace_files(config, file)
    exposures = trail.who_was_shown(paths, doc_id, since=_when(since, "since"), until=_when(until, "until"))
    if as_json:
        print_json([e.__dict__ for e in exposures])
        return
    span = f" since {since}" if since else ""
    table = Table("user", "times", "first (UTC)", "last (UTC)", "versions", title=f"Who was shown {doc_id}{span}")
    for e in exposures:
        table.add_row(
            e.user,
            str(e.times),
            (e.first or "")[:19].replace("T", " "),
            (e.last or "")[:19].replace("T", " "),
            ", ".join(e.versions),
        )
    console.print(table)
    if not exposures:
        console.print(f"nobody was shown {doc_id}{span} (according to {', '.join(map(str, paths))})")
