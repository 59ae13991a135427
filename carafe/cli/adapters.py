"""`carafe adapters`: the adapter registry from the terminal.

Changes are written to the registry folder (the actor is the OS user); running
gateways pick them up at once for routing and within
``adapters.registry.reconcile_interval_s`` for preloading. `sync` asks a running
gateway to reconcile now.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.table import Table

from carafe.adapters.registry import STABLE, Registry
from carafe.cli.common import (
    ConfigOption,
    JsonOption,
    admin_span,
    config_or_exit,
    console,
    fail,
    print_json,
)
from carafe.config import CarafeConfig
from carafe.errors import CarafeError
from carafe.gateway.admin_adapters import adapter_attributes, adapter_detail, adapter_summary

app = typer.Typer(no_args_is_help=True)


def _registry(cfg: CarafeConfig) -> Registry:
    return Registry(cfg.registry_dir, max_rank=cfg.adapters.engine.max_lora_rank)


def _run(config: Path | None, action: Any, change: str | None = None, **attrs: Any) -> Any:
    """Run ``action`` on the registry; a ``change`` (add, promote...) is traced as an admin action."""
    cfg = config_or_exit(config)
    if change is None:
        return _call(cfg, action)
    with admin_span(cfg, f"carafe.admin.adapters.{change}", **adapter_attributes(attrs.pop("name"), **attrs)):
        return _call(cfg, action)


def _call(cfg: CarafeConfig, action: Any) -> Any:
    try:
        return action(_registry(cfg))
    except CarafeError as exc:
        fail(exc.message)


def _show_summary(summary: dict[str, Any], as_json: bool, verb: str) -> None:
    if as_json:
        print_json(summary)
        return
    canary = f", canary {summary['canary']} at {summary['canary_weight']}%" if summary["canary"] else ""
    console.print(f"{verb} [bold]{summary['name']}[/]: stable {summary['stable']}{canary}")


def _learn_base(reg: Registry, cfg: CarafeConfig) -> None:
    """The embedded engine can name its base model's digest without loading it."""
    if cfg.adapters.engine.backend != "local":
        return
    try:
        from carafe.adapters.local import LocalEngine
    except ImportError:
        return
    from carafe.adapters.manifest import BaseModelRef

    with console.status("Reading the base model's digest (converting it once if needed)..."):
        engine = LocalEngine(cfg.adapters.engine, models_dir=cfg.models_dir)
        digest = engine.model_digest  # prepares the base model's files, whose shapes adapters must fit
        reg.record_base(BaseModelRef(id=engine.model_id, digest=digest), engine.files.folder if engine.files else None)


@app.command("list")
def list_adapters(config: Path | None = ConfigOption, as_json: bool = JsonOption) -> None:
    """List adapters with their channels and versions."""
    rows = _run(config, lambda reg: [adapter_summary(reg, None, n) for n in reg.names()])
    if as_json:
        print_json(rows)
        return
    table = Table("name", "stable", "canary", "other channels", "versions")
    for r in rows:
        canary = f"{r['canary']} ({r['canary_weight']}%)" if r["canary"] else "-"
        named = ", ".join(f"{k}={v}" for k, v in r["channels"].items()) or "-"
        table.add_row(r["name"], str(r["stable"] or "-"), canary, named, ", ".join(map(str, r["versions"])))
    console.print(table if rows else "No adapters yet: `carafe adapters add PATH`")


@app.command("show")
def show(
    name: str = typer.Argument(..., help="Adapter name"),
    history: int = typer.Option(20, "--history", help="How many history entries to show"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Show an adapter: channels, each version's manifest (lineage) and its change history."""
    detail = _run(config, lambda reg: adapter_detail(reg, None, name, history))
    if as_json:
        print_json(detail)
        return
    _show_summary(detail, False, "Adapter")
    versions = Table("version", "kind", "base model", "rank", "created", "description", "digest")
    for v, m in detail["manifests"].items():
        versions.add_row(
            str(v),
            m["kind"],
            m["base_model"]["id"],
            str(m.get("rank") or "-"),
            str(m["created_at"])[:19],
            m["description"][:50],
            (m.get("adapter_digest") or "")[:19],
        )
    console.print(versions)
    log = Table("when", "who", "what", "version")
    for e in detail["history"]:
        log.add_row(e["at"][:19], e["actor"], e["action"], str(e.get("version", "")))
    console.print(log)


@app.command("add")
def add(
    path: Path = typer.Argument(..., help="A PEFT LoRA folder (adapter_config.json + adapter_model.safetensors)"),
    name: str | None = typer.Option(None, "--name", "-n", help="Adapter name (default: manifest's, else folder's)"),
    version: int | None = typer.Option(None, "--version", help="Version number (default: next free)"),
    kind: str | None = typer.Option(None, "--kind", help="knowledge, skill, style or other"),
    description: str | None = typer.Option(None, "--description", "-d", help="What it is for (auto routing reads it)"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Copy an adapter into the registry as a new immutable version."""

    def action(reg: Registry) -> Any:
        if reg.base is None:
            _learn_base(reg, config_or_exit(config))
        if reg.base is None:
            fail(
                "the registry does not know the served base model yet: start the gateway once "
                "(`carafe serve`) so it records it, then add again"
            )
        return reg.add(
            path,
            actor=getpass.getuser(),
            name=name,
            version=version,
            kind=kind,  # type: ignore[arg-type]
            description=description,
        )

    av = _run(config, action, "add", name=name, version=version, path=str(path))
    if as_json:
        print_json(
            {
                "name": av.name,
                "version": av.version,
                "ref": av.ref,
                "path": str(av.path),
                "manifest": av.manifest.model_dump(mode="json"),
            }
        )
        return
    console.print(f"Added [bold]{av.ref}[/] (rank {av.manifest.rank}, {av.manifest.adapter_digest[:19]}...)")


@app.command("promote")
def promote(
    name: str = typer.Argument(...),
    version: int = typer.Argument(...),
    channel: str = typer.Option(STABLE, "--channel", help="stable, canary or a named channel"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Point a channel (default: stable) at a version."""

    def action(reg: Registry) -> dict[str, Any]:
        reg.promote(name, version, actor=getpass.getuser(), channel=channel)
        return adapter_summary(reg, None, name)

    _show_summary(
        _run(config, action, "promote", name=name, version=version, channel=channel),
        as_json,
        f"Promoted {version} to {channel} of",
    )


@app.command("rollback")
def rollback(name: str = typer.Argument(...), config: Path | None = ConfigOption, as_json: bool = JsonOption) -> None:
    """Make the previous stable version stable again."""

    def action(reg: Registry) -> dict[str, Any]:
        reg.rollback(name, actor=getpass.getuser())
        return adapter_summary(reg, None, name)

    _show_summary(_run(config, action, "rollback", name=name), as_json, "Rolled back")


@app.command("split")
def split(
    name: str = typer.Argument(...),
    canary: int = typer.Option(..., "--canary", help="The canary version"),
    weight: int = typer.Option(..., "--weight", min=0, max=100, help="Percent of users (sticky per user)"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Send a sticky share of users to a canary version."""

    def action(reg: Registry) -> dict[str, Any]:
        reg.split(name, canary, weight, actor=getpass.getuser())
        return adapter_summary(reg, None, name)

    _show_summary(_run(config, action, "split", name=name, version=canary, canary_weight=weight), as_json, "Split")


@app.command("remove")
def remove(
    name: str = typer.Argument(...),
    version: int | None = typer.Option(None, "--version", help="Remove only this version (not on a channel)"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Remove one version, or the whole adapter (kept under .removed/ with its history)."""
    what = f"{name}@{version}" if version else f"adapter {name} and all its versions"
    if not yes and not as_json and not typer.confirm(f"Remove {what}?"):
        raise typer.Exit(1)
    _run(
        config,
        lambda reg: reg.remove(name, actor=getpass.getuser(), version=version),
        "remove",
        name=name,
        version=version,
    )
    if as_json:
        print_json({"name": name, "version": version, "removed": True})
    else:
        console.print(f"Removed {what}")


@app.command("sync")
def sync(
    url: str | None = typer.Option(None, "--url", help="Gateway URL (default: from server.host/port)"),
    key: str | None = typer.Option(None, "--key", envvar="CARAFE_API_KEY", help="Admin API key"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Ask a running gateway to load/unload adapters to match the registry now."""
    cfg = config_or_exit(config)
    base = url or f"http://{cfg.server.host}:{cfg.server.port}"
    key = (
        key
        or os.environ.get("CARAFE_API_KEY")
        or (cfg.auth.admin_bootstrap_key.get_secret_value() if cfg.auth.admin_bootstrap_key else None)
    )
    if not key:
        fail("an admin key is needed: --key or $CARAFE_API_KEY")
    try:
        resp = httpx.post(f"{base}/admin/adapters/sync", headers={"Authorization": f"Bearer {key}"}, timeout=300)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the gateway at {base}: {exc}")
    if resp.status_code != 200:
        fail(f"the gateway answered {resp.status_code}: {resp.text}")
    report = resp.json()
    if as_json:
        print_json(report)
        return
    console.print(
        f"loaded: {', '.join(report['loaded']) or '-'}; unloaded: {', '.join(report['unloaded']) or '-'}; "
        f"resident: {', '.join(report['resident']) or '-'}"
    )
    for ref, why in report["failed"].items():
        console.print(f"[red]failed[/] {ref}: {why}")
