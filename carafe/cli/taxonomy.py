"""`carafe taxonomy validate|diff`: check InstructLab-style recipes before tuning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from carafe.errors import CarafeError

app = typer.Typer(no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

PathArg = Annotated[Optional[Path], typer.Argument(help="Taxonomy folder or one qna.yaml (default: tuning.taxonomy)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="carafe.yaml")]


def _taxonomy_path(path: Path | None, config: Path | None) -> Path:
    if path is not None:
        return path
    from carafe.config import load_config

    return load_config(config).tuning.taxonomy


@app.command()
def validate(path: PathArg = None, as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Validate every recipe (schema, yamllint rules, file names, documents). Exit 1 on errors."""
    from carafe.tuning.validate import validate_taxonomy

    taxonomy = _taxonomy_path(path, config)
    if not taxonomy.exists():
        err_console.print(f"[red]error:[/] {taxonomy} does not exist")
        raise typer.Exit(2)
    report = validate_taxonomy(taxonomy)
    if as_json:
        print(json.dumps({"ok": report.ok, "recipes": [{"leaf": r.leaf, "kind": r.kind, "seeds": len(r.seeds), "sha256": r.sha256}
                                                       for r in report.recipes],
                          "issues": [i.to_dict() for i in report.issues]}, indent=2))
    else:
        for issue in report.issues:
            console.print(f"[red]{issue.severity.upper()}[/] {issue}", highlight=False, soft_wrap=True)
        table = Table("leaf", "kind", "seeds", title=f"valid recipes in {taxonomy}")
        for r in report.recipes:
            table.add_row(r.leaf, r.kind, str(len(r.seeds)))
        console.print(table)
        errors = sum(i.severity == "error" for i in report.issues)
        console.print("[green]taxonomy is valid[/]" if report.ok else f"[red]{errors} error(s)[/]")
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def diff(path: PathArg = None, base: Annotated[str, typer.Option(help="Git ref to compare with (merge-base)")] = "origin/main",
         as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """List leaves changed since BASE (committed, uncommitted and untracked)."""
    from carafe.tuning.diff import changed_leaves

    taxonomy = _taxonomy_path(path, config)
    try:
        leaves = changed_leaves(taxonomy, base)
    except CarafeError as exc:
        err_console.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(2) from None
    rel = [p.relative_to(taxonomy.resolve()).as_posix() for p in leaves]
    if as_json:
        print(json.dumps({"base": base, "changed": rel}))
    elif not rel:
        console.print(f"no changed leaves since {base}")
    else:
        for r in rel:
            console.print(r, highlight=False)
