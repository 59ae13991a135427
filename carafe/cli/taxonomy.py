"""`carafe taxonomy validate|diff|convert`: check and upgrade InstructLab-style recipes before tuning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from carafe.errors import CarafeError

app = typer.Typer(no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

PathArg = Annotated[Path | None, typer.Argument(help="Taxonomy folder or one qna.yaml (default: tuning.taxonomy)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="carafe.yaml")]


def _taxonomy_path(path: Path | None, config: Path | None) -> Path:
    if path is not None:
        return path
    from carafe.config import load_config

    return load_config(config).tuning.taxonomy


def _report(taxonomy: Path, config: Path | None, name: str | None):
    """Recipes and issues, plus (for a whole taxonomy) what publish will need: name, sidecars, base."""
    from carafe.config import load_config
    from carafe.tuning.documents import DocumentSource
    from carafe.tuning.preflight import base_issues, sidecar_issues
    from carafe.tuning.validate import validate_taxonomy

    cfg = load_config(config)
    t = cfg.tuning
    report = validate_taxonomy(taxonomy, docs=DocumentSource(roots=t.document_roots, clone_hosts=t.document_hosts))
    if taxonomy.is_dir() and report.ok:
        base = t.training.base_model if "base_model" in t.training.model_fields_set else cfg.adapters.engine.model
        rank = max(t.training.knowledge.rank, t.training.skills.rank)
        report.issues += sidecar_issues(taxonomy, report.recipes, name)
        report.issues += base_issues(base, cfg.registry_dir, rank, cfg.adapters.engine.max_lora_rank)
    return report


@app.command()
def validate(
    path: PathArg = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    name: Annotated[str | None, typer.Option(help="Adapter name `tune run --name` will use")] = None,
) -> None:
    """Validate every recipe (schema, yamllint rules, file names, documents) and what publish needs (adapter
    name, sidecar keys, base model). Exit 1 on errors."""
    taxonomy = _taxonomy_path(path, config)
    if not taxonomy.exists():
        err_console.print(f"[red]error:[/] {taxonomy} does not exist")
        raise typer.Exit(2)
    report = _report(taxonomy, config, name)
    if as_json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "recipes": [
                        {"leaf": r.leaf, "kind": r.kind, "seeds": len(r.seeds), "sha256": r.sha256}
                        for r in report.recipes
                    ],
                    "issues": [i.to_dict() for i in report.issues],
                },
                indent=2,
            )
        )
    else:
        for issue in report.issues:
            color = "red" if issue.severity == "error" else "yellow"
            console.print(f"[{color}]{issue.severity.upper()}[/] {escape(str(issue))}", highlight=False, soft_wrap=True)
        table = Table("leaf", "kind", "seeds", title=f"valid recipes in {taxonomy}")
        for r in report.recipes:
            table.add_row(r.leaf, r.kind, str(len(r.seeds)))
        console.print(table)
        errors = sum(i.severity == "error" for i in report.issues)
        console.print("[green]taxonomy is valid[/]" if report.ok else f"[red]{errors} error(s)[/]")
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def diff(
    path: PathArg = None,
    base: Annotated[str, typer.Option(help="Git ref to compare with (merge-base)")] = "origin/main",
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
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


@app.command()
def convert(
    path: PathArg = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would change; write nothing")] = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Rewrite v1/v2 skill recipes as the latest version, keeping comments. Exit 1 when one cannot be."""
    from carafe.tuning.convert import convert_recipe
    from carafe.tuning.validate import find_recipe_files, leaf_of

    taxonomy = _taxonomy_path(path, config)
    if not taxonomy.exists():
        err_console.print(f"[red]error:[/] {taxonomy} does not exist")
        raise typer.Exit(2)
    files = [taxonomy] if taxonomy.is_file() else [f for f in find_recipe_files(taxonomy) if f.name == "qna.yaml"]
    root = taxonomy if taxonomy.is_dir() else taxonomy.parent
    done = [convert_recipe(f, leaf_of(f, root), write=not dry_run) for f in files]
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "file": c.file,
                        "from_version": c.from_version,
                        "changed": c.changed,
                        "ok": c.ok,
                        "refused": c.refused,
                        "remaining": [i.to_dict() for i in c.remaining if i.severity == "error"],
                    }
                    for c in done
                ],
                indent=2,
            )
        )
    for c in [] if as_json else done:
        if c.refused:
            console.print(
                f"[red]NOT CONVERTED[/] {escape(c.file)}: {escape(c.refused)}", highlight=False, soft_wrap=True
            )
        elif not c.ok:
            console.print(
                f"[red]NOT CONVERTED[/] {escape(c.file)}: as v3 it would have errors:", highlight=False, soft_wrap=True
            )
            for i in c.remaining:
                console.print(f"  {escape(str(i))}", highlight=False, soft_wrap=True)
        elif c.changed:
            console.print(
                f"{'would convert' if dry_run else 'converted'} {c.file} (v{c.from_version} -> v3)", highlight=False
            )
    if not as_json:
        console.print(
            f"{sum(c.changed and c.ok for c in done)} converted, {sum(not c.ok for c in done)} not, "
            f"{sum(not c.changed and c.ok for c in done)} already current"
        )
    raise typer.Exit(0 if all(c.ok for c in done) else 1)
