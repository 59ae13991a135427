"""`carafe tune generate|train|eval|publish|run`: from a taxonomy to a published LoRA adapter."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from carafe.errors import CarafeError
from carafe.tuning.progress import RunProgress

app = typer.Typer(no_args_is_help=True)
console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="carafe.yaml")]
TaxonomyOpt = Annotated[Path | None, typer.Option("--taxonomy", help="Taxonomy folder (default: tuning.taxonomy)")]
TeacherOpt = Annotated[
    str | None,
    typer.Option(
        "--teacher",
        help="Teacher endpoint URL, `offline` (the built-in generator, default), `template` or `local` (base model)",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo the stage even if its inputs are unchanged")]


def _workspace(config: Path | None, taxonomy: Path | None, teacher: str | None):
    from carafe.config import load_config
    from carafe.tuning.pipeline import Workspace

    cfg = load_config(config)
    tuning = cfg.tuning.model_copy(deep=True)
    if teacher is not None:
        tuning.teacher.endpoint = None if teacher == "offline" else teacher
    if "base_model" not in tuning.training.model_fields_set:
        tuning.training.base_model = cfg.adapters.engine.model  # train on the base the gateway serves
    return Workspace(
        tuning,
        taxonomy or tuning.taxonomy,
        tuning.out_dir(cfg.data_dir),
        cfg.models_dir,
        cfg.registry_dir,
        cfg.adapters.engine.max_lora_rank,
    )


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _guard(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except CarafeError as exc:
        console.print(f"[red]error:[/] {exc.message}")
        for issue in getattr(exc, "issues", [])[:20]:
            console.print(f"  {issue}", highlight=False)
        raise typer.Exit(1) from None


def near_dup_encoder(ws):
    """The sentence encoder of the near-duplicate filter (MiniLM), when the filter is on."""
    if ws.cfg.filters.near_duplicate >= 1:
        return None
    from carafe.indexer.embedding import Embedder

    return Embedder().encode


def _generate(ws, force: bool, quiet: bool, recipes: list | None = None) -> dict:
    from carafe.tuning.generate import estimate
    from carafe.tuning.pipeline import generate_stage

    recipes = recipes if recipes is not None else ws.recipes()
    rows = estimate(recipes, ws.cfg, ws.documents())
    if not quiet:
        table = Table("leaf", "kind", "teacher calls", "samples (est.)", "size (est.)", title="generation estimate")
        for r in rows:
            table.add_row(
                r["leaf"], r["kind"], str(r["teacher_calls"]), str(r["samples"]), f"{r['approx_bytes'] / 1024:.0f} KiB"
            )
        console.print(table)
    with _progress() as progress, RunProgress(ws.out, "generate") as watched:
        task = progress.add_task("generating", total=sum(r["teacher_calls"] for r in rows), info="")

        def advance(stage: str, n: int) -> None:
            watched.advance(stage, n)
            t = progress.tasks[task]
            if t.total is not None and t.completed + n > t.total:
                progress.update(task, total=t.completed + n)
            progress.update(task, advance=n, info=stage)

        summary = generate_stage(ws, recipes, force=force, advance=advance, encode=near_dup_encoder(ws))
    if not quiet:
        table = Table("leaf", "generated", "format failures", "dropped", "kept", "per fact", title="drop report")
        for r in summary["reports"]:
            per_fact = f"{r['samples_per_fact_min']}-{r['samples_per_fact_mean']}" if r.get("facts") else "-"
            table.add_row(
                r["leaf"],
                str(r["generated"]),
                str(r["format_failures"]),
                ", ".join(f"{k}: {v}" for k, v in r["dropped"].items()) or "-",
                str(r["kept"]),
                per_fact + (f" ({r['facts']} facts)" if r.get("facts") else ""),
            )
        console.print(table)
        console.print(
            f"{summary['samples']} samples → {ws.out / 'data' / 'train.jsonl'}"
            + (" (reused)" if summary["reused"] else "")
        )
    return summary


def _train(ws, force: bool, quiet: bool) -> dict:
    from carafe.tuning.pipeline import train_stage

    with _progress() as progress, RunProgress(ws.out, "train") as watched:
        tasks: dict[str, TaskID] = {}

        def on_step(s) -> None:
            watched.step(s)
            if s.phase not in tasks:
                tasks[s.phase] = progress.add_task(f"phase {s.phase}", total=s.total, info="")
            progress.update(tasks[s.phase], completed=s.step, info=f"loss {s.loss:.3f}  {s.tokens_per_s:.0f} tok/s")

        summary = train_stage(ws, force=force, on_step=on_step)
    if not quiet:
        table = Table(
            "phase",
            "own",
            "replay",
            "general",
            "steps",
            "tokens",
            "seconds",
            "tokens/s",
            "final loss",
            title="training",
        )
        for p in summary["phases"]:
            table.add_row(
                p["name"],
                str(p["samples"]["own"]),
                str(p["samples"]["replay"]),
                str(p["samples"]["general"]),
                str(p["steps"]),
                str(p["tokens"]),
                str(p.get("seconds", "-")),
                str(p["tokens_per_s"]),
                str(p["final_loss"]),
            )
        console.print(table)
        console.print(f"adapter → {summary['adapter']}" + (" (reused)" if summary["reused"] else ""))
    return summary


def _eval(ws, force: bool, quiet: bool) -> dict:
    from carafe.tuning.pipeline import eval_stage

    with console.status("evaluating base vs adapter"), RunProgress(ws.out, "eval"):
        from carafe.indexer.embedding import Embedder

        summary = eval_stage(ws, ws.recipes(), force=force, encode=Embedder().encode)
    if not quiet:
        base, ad = summary["metrics"]["base"], summary["metrics"]["adapter"]
        table = Table("metric", "base", "adapter", title="evaluation (held-out recipe questions, forgetting)")
        for k in base:
            table.add_row(k, f"{base[k]:.4g}", f"{ad.get(k, float('nan')):.4g}")
        console.print(table)
        cells = summary["metrics"].get("cells")
        if cells:
            table = Table("questions", "n", "base", "adapter", "base + RAG", "adapter + RAG", title="key-fact accuracy")
            for label, row in [("all", cells), ("seed", cells.get("seed")), ("document-only", cells.get("document"))]:
                if row:
                    n = row.get("questions", 0)
                    table.add_row(
                        label, str(n), *(f"{row[c]:.0%}" for c in ("base", "adapter", "base+rag", "adapter+rag"))
                    )
            console.print(table)
        gate = summary["gate"]
        console.print(
            "[green]gate passed[/]" if gate["passed"] else "[red]gate failed:[/] " + "; ".join(gate["failed"])
        )
    return summary


def _publish(ws, name: str | None, force: bool, quiet: bool) -> dict:
    from carafe.tuning.pipeline import publish_stage

    summary = publish_stage(ws, ws.recipes(), name=name, force=force)
    if not quiet:
        console.print(
            f"published [bold]{summary['ref']}[/] into {summary['registry']} "
            "(promote it with `carafe adapters promote` when you are satisfied)"
        )
    return summary


def _emit(as_json: bool, data: dict) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str))


@app.command()
def generate(
    config: ConfigOpt = None,
    taxonomy: TaxonomyOpt = None,
    teacher: TeacherOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate and filter synthetic training data from the recipes (resumable)."""
    ws = _workspace(config, taxonomy, teacher)
    _emit(as_json, _guard(lambda: _generate(ws, force, as_json)))


@app.command()
def train(
    config: ConfigOpt = None,
    taxonomy: TaxonomyOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="Train on this JSONL instead: an sdg_hub flow's output or messages rows (training_hub)"
        ),
    ] = None,
    phase: Annotated[str, typer.Option(help="Phase of --data rows that name none: knowledge or skills")] = "knowledge",
) -> None:
    """Train the LoRA adapter in phases (knowledge, then skills with replay); resumes from checkpoints."""
    from carafe.tuning.pipeline import import_dataset

    ws = _workspace(config, taxonomy, None)
    if data is not None:
        imported = _guard(lambda: import_dataset(ws, data, phase=phase))
        if not as_json:
            console.print(f"{imported['samples']} samples from {data} → {ws.out / 'data' / 'train.jsonl'}")
    _emit(as_json, _guard(lambda: _train(ws, force, as_json)))


@app.command("export")
def export(
    out: Annotated[Path, typer.Argument(help="JSONL file to write")],
    config: ConfigOpt = None,
    taxonomy: TaxonomyOpt = None,
) -> None:
    """Export the generated training data as training_hub reads it (messages + metadata per line)."""
    from carafe.tuning.formats import export_training_hub
    from carafe.tuning.pipeline import load_dataset

    ws = _workspace(config, taxonomy, None)
    n = _guard(lambda: export_training_hub(load_dataset(ws)[0], out))
    console.print(f"{n} samples → {out} (training_hub `messages` format)")


@app.command("eval")
def evaluate(
    config: ConfigOpt = None, taxonomy: TaxonomyOpt = None, force: ForceOpt = False, as_json: JsonOpt = False
) -> None:
    """Compare base and adapter on held-out questions and general text; exit 1 when the gate fails."""
    ws = _workspace(config, taxonomy, None)
    summary = _guard(lambda: _eval(ws, force, as_json))
    _emit(as_json, summary)
    raise typer.Exit(0 if summary["gate"]["passed"] else 1)


@app.command()
def publish(
    config: ConfigOpt = None,
    taxonomy: TaxonomyOpt = None,
    name: Annotated[str | None, typer.Option(help="Adapter name (default: the taxonomy's sidecar)")] = None,
    force: Annotated[bool, typer.Option("--force", help="Publish even if the gate failed")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Publish the evaluated adapter into the registry as a new version (not promoted)."""
    ws = _workspace(config, taxonomy, None)
    _emit(as_json, _guard(lambda: _publish(ws, name, force, as_json)))


@app.command()
def run(
    config: ConfigOpt = None,
    taxonomy: TaxonomyOpt = None,
    teacher: TeacherOpt = None,
    name: Annotated[str | None, typer.Option(help="Adapter name (default: the taxonomy's sidecar)")] = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """All stages; each reuses its output when its inputs are unchanged (by content hash)."""
    ws = _workspace(config, taxonomy, teacher)

    def stages() -> dict:
        recipes = ws.preflight(name)  # what publish needs, checked before minutes of work
        out = {"generate": _generate(ws, force, as_json, recipes), "train": _train(ws, force, as_json)}
        out["eval"] = _eval(ws, force, as_json)
        out["publish"] = _publish(ws, name, False, as_json)
        return out

    _emit(as_json, _guard(stages))
