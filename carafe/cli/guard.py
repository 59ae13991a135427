"""`carafe guard`: see what each guardrail check says about a text."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from rich.table import Table

from carafe.cli.common import ConfigOption, JsonOption, config_or_exit, console, fail, print_json
from carafe.errors import CarafeError
from carafe.guards import GuardPipeline, GuardVerdict

app = typer.Typer(no_args_is_help=True)

_STYLE = {"allow": "green", "redact": "yellow", "block": "bold red"}


async def _run(
    pipeline: GuardPipeline, text: str, *, output: bool, policy: str | None, passages: list[str]
) -> tuple[str, list[GuardVerdict], GuardVerdict | None]:
    try:
        if not output:
            result = await pipeline.check_input(text, policy=policy)
            return result.text, result.verdicts, result.blocked
        stream = pipeline.output_stream(policy=policy, passages=passages)
        first = await stream.feed(text)
        last = await stream.finish() if first.blocked is None else first
        return first.text + (last.text if last is not first else ""), stream.verdicts, stream.blocked
    finally:
        await pipeline.aclose()


@app.command("test")
def test(
    text: str = typer.Argument(..., help="The text to check (use '-' to read stdin)"),
    output: bool = typer.Option(
        False, "--output", help="Check it as a model ANSWER (output checks) instead of a prompt"
    ),
    policy: str | None = typer.Option(
        None, "--policy", "-p", help="Guard policy to apply (default: guards.default_policy)"
    ),
    passage: list[str] = typer.Option(
        [], "--passage", help="A retrieved passage to ground an --output text in (repeatable)"
    ),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Run the guardrails on TEXT and print each check's verdict."""
    if text == "-":
        text = typer.get_text_stream("stdin").read()
    cfg = config_or_exit(config)
    try:
        with console.status("Loading the guard models…", spinner="dots"):
            # Loaded up front so the latency column shows check time, not model loading.
            from carafe.indexer.embedding import Embedder

            embedder = Embedder.from_config(cfg.indexer.embedding)  # the gateway's, so verdicts match its decisions
            pipeline = GuardPipeline.from_config(cfg.guards, embedder=embedder)
            embedder.encode(["warm up"])  # first forward pass and phone metadata are one-off costs
            pipeline.checks["pii"].scan("warm up +1 415 555 0132")  # type: ignore[attr-defined]
        final, verdicts, blocked = asyncio.run(_run(pipeline, text, output=output, policy=policy, passages=passage))
    except CarafeError as exc:
        fail(exc.message)
    stage = "output" if output else "input"
    if as_json:
        print_json(
            {
                "stage": stage,
                "policy": policy or cfg.guards.default_policy,
                "blocked": None
                if blocked is None
                else {"check": blocked.check, "category": blocked.category, "reason": blocked.reason},
                "text": final,
                "verdicts": [
                    {
                        "check": v.check,
                        "action": v.action,
                        "category": v.category,
                        "score": round(v.score, 4),
                        "flagged": v.flagged,
                        "skipped": v.skipped,
                        "latency_ms": round(v.latency_ms, 2),
                        "reason": v.reason,
                    }
                    for v in verdicts
                ],
            }
        )
        raise typer.Exit(3 if blocked is not None else 0)
    table = Table(
        "check",
        "action",
        "category",
        "score",
        "ms",
        "reason",
        title=f"{stage} checks · policy {policy or cfg.guards.default_policy}",
    )
    for v in verdicts:
        action = "skipped" if v.skipped else v.action + (" (logged)" if v.flagged and v.action == "allow" else "")
        table.add_row(
            v.check,
            f"[{_STYLE.get(v.action, 'white')}]{action}[/]",
            v.category,
            f"{v.score:.2f}",
            f"{v.latency_ms:.1f}",
            v.reason,
        )
    console.print(table)
    if blocked is not None:
        console.print(f"[bold red]BLOCKED[/] by {blocked.check} ({blocked.category}): {blocked.reason}")
        raise typer.Exit(3)
    if final != text:
        console.print("[yellow]Text after redaction:[/]")
        console.print(final, markup=False, highlight=False)
    else:
        console.print("[green]Allowed unchanged.[/]")
