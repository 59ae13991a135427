"""`carafe index`: sync sources into the index, search as a user, show stats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from carafe.cli.common import ConfigOption, JsonOption, config_or_exit, console, fail, print_json
from carafe.cli.keys import open_key_store, where
from carafe.config import CarafeConfig
from carafe.errors import CarafeError
from carafe.gateway.retrieval import citations, scope_of
from carafe.indexer.index import Index
from carafe.indexer.sync import SyncReport

app = typer.Typer(no_args_is_help=True)


def _open(cfg: CarafeConfig) -> Index:
    from transformers.utils import logging as hf_logging

    from carafe.indexer.embedding import Embedder

    hf_logging.disable_progress_bar()  # keep --json output and the sync progress bar clean

    return Index(cfg.indexer, Embedder.from_config(cfg.indexer.embedding), data_dir=cfg.data_dir)


def _summary(report: SyncReport) -> None:
    table = Table(
        "result",
        "documents",
        title=f"Sync of {', '.join(report.sources) or 'no sources'}",
        caption=f"{report.chunks_embedded} chunks embedded in {report.duration_s:.1f} s",
    )
    for name, n in report.counts().items():
        style = "red" if name == "failed" and n else ""
        table.add_row(name.replace("_", " "), f"[{style}]{n}[/]" if style else str(n))
    console.print(table)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
    if report.failed:
        failures = Table("file", "reason", title="Failed (nothing of these files is in the index)", title_style="red")
        for f in report.failed:
            failures.add_row(f.path, f.reason)
        console.print(failures)


def _run_sync(index: Index, source: str | None, as_json: bool) -> SyncReport:
    if as_json:
        report = index.sync(source)
        print_json(report.to_dict())
        return report
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chunks"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("scanning and comparing", total=None)

        def progress(phase: str, done: int, total: int) -> None:
            bar.update(task, description="embedding" if phase == "embed" else phase, completed=done, total=total)

        report = index.sync(source, progress=progress)
    _summary(report)
    return report


@app.command("sync")
def sync(
    source: str | None = typer.Option(None, "--source", "-s", help="Sync only this source (default: all)"),
    watch: bool = typer.Option(False, "--watch", "-w", help="Keep running and re-sync when files change"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Bring the index in line with the sources: new, changed, deleted and re-permissioned documents."""
    cfg = config_or_exit(config)
    if not cfg.indexer.sources:
        fail("no sources configured: add `indexer.sources: [{name: policies, path: examples/policies}]` to carafe.yaml")
    from carafe.gateway.telemetry.setup import setup_telemetry

    telemetry = setup_telemetry(
        cfg.telemetry, data_dir=cfg.data_dir, service_name="carafe-indexer"
    )  # sync runs are traced
    try:
        index = _open(cfg)
        try:
            report = _run_sync(index, source, as_json)
            if watch:
                _watch(index, source, cfg, as_json)
        finally:
            index.close()
    except CarafeError as exc:
        fail(exc.message)
    finally:
        telemetry.shutdown()
    if report.failed and not watch:
        raise typer.Exit(3)  # scripts can tell a partial sync apart


def _watch(index: Index, source: str | None, cfg: CarafeConfig, as_json: bool) -> None:
    from watchfiles import watch as watch_files

    paths = [str(s.root) for s in index.sources(source)]
    interval_ms = int(cfg.indexer.watch_interval_s * 1000)
    if not as_json:
        console.print(f"Watching {', '.join(paths)} (Ctrl-C to stop)")
    try:
        for _changes in watch_files(*paths, debounce=interval_ms, step=100, force_polling=None):
            _run_sync(index, source, as_json)
    except KeyboardInterrupt:
        pass


@app.command("search")
def search(
    query: str = typer.Argument(..., help="What to search for"),
    as_user: str = typer.Option(..., "--as", help="Search as this user (their groups come from their API key)"),
    top_k: int | None = typer.Option(None, "--top-k", "-k", min=1, max=50, help="Passages to return"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Show what USER would retrieve for QUERY (debug permissions and ranking)."""
    cfg = config_or_exit(config)
    principal = open_key_store(cfg).find_user(as_user)
    if principal is None:
        fail(f"unknown user {as_user!r}: no live API key for them in {where(cfg)} (see `carafe keys list`)")
    try:
        index = _open(cfg)
        try:
            passages = index.search(query, scope_of(principal), top_k=top_k)
        finally:
            index.close()
    except CarafeError as exc:
        fail(exc.message)
    if as_json:
        print_json(
            {
                "user": principal.user,
                "groups": list(principal.groups),
                "admin": principal.is_admin,
                "passages": [
                    dict(c, score=p.score, text=p.text, sensitivity=p.sensitivity)
                    for c, p in zip(citations(passages), passages)
                ],
            }
        )
        return
    who = f"{principal.user} (groups: {', '.join(principal.groups) or '-'}{'; admin' if principal.is_admin else ''})"
    table = Table("#", "score", "document", "chunk", "sensitivity", "text", title=f"{query!r} as {who}")
    for n, p in enumerate(passages, start=1):
        table.add_row(
            str(n),
            f"{p.score:.3f}",
            f"{p.title}\n[dim]{p.doc_id}@{p.version}[/]",
            str(p.chunk),
            p.sensitivity,
            p.text[:160].replace("\n", " "),
        )
    console.print(table if passages else f"No passages visible to {who}.")


@app.command("stats")
def stats(config: Path | None = ConfigOption, as_json: bool = JsonOption) -> None:
    """Documents and chunks in the index, per source, and the last sync's counts."""
    cfg = config_or_exit(config)
    try:
        index = _open(cfg)
        try:
            data: dict[str, Any] = index.stats()
        finally:
            index.close()
    except CarafeError as exc:
        fail(exc.message)
    if as_json:
        print_json(data)
        return
    table = Table("", "", title="Index")
    for key, value in data.items():
        table.add_row(key.replace("_", " "), str(value))
    console.print(table)
