"""`carafe keys`: create, list and revoke API keys, and set token or cost budgets — all in
the state database the gateways read (SQLite under data_dir, or state.database_url)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer
from rich.table import Table

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
from carafe.gateway.auth import KeyStore
from carafe.gateway.telemetry import attributes as attr
from carafe.state import Budgets, Database, database_url, open_state

app = typer.Typer(no_args_is_help=True)


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def open_key_store(cfg: CarafeConfig) -> KeyStore:
    """The keys every gateway reads; a legacy keys.json is imported once (and said so)."""
    try:
        store = KeyStore.open(cfg.data_dir, cfg.state, legacy_keys=cfg.keys_file)
    except CarafeError as exc:
        fail(exc.message)
    if store.imported is not None and not store.imported.already_done:
        console.print(f"[yellow]{store.imported.summary()}[/]")
    return store


def where(cfg: CarafeConfig) -> str:
    """Where the keys live, without a password."""
    url = database_url(cfg.state, cfg.data_dir)
    return Database.describe(url)


@app.command("create")
def create(
    user: str = typer.Option(..., "--user", "-u", help="Who the key belongs to"),
    groups: str = typer.Option("", "--groups", "-g", help="Comma-separated groups (document ACLs match these)"),
    admin: bool = typer.Option(False, "--admin", help="Grant the admin role (admin API)"),
    models: str | None = typer.Option(
        None, "--models", help="Comma-separated models/adapters it may use (default: all)"
    ),
    rpm: int | None = typer.Option(None, "--rpm", help="Requests per minute (default: auth.default_rpm)"),
    tpm: int | None = typer.Option(
        None, "--tpm", help="Tokens per minute, prompt + generated (default: auth.default_tpm)"
    ),
    team: str | None = typer.Option(None, "--team", help="Team the key's spend counts against"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Create a key and print it ONCE (only its hash is stored)."""
    cfg = config_or_exit(config)
    store = open_key_store(cfg)
    with admin_span(cfg, "carafe.admin.keys.create", **{"carafe.key.user": user}) as span:
        try:
            key, rec = store.create(
                user,
                groups=_split(groups),
                admin=admin,
                models=_split(models) if models is not None else None,
                rpm=rpm or cfg.auth.default_rpm,
                tpm=tpm or cfg.auth.default_tpm,
                team=team,
                actor="cli",
            )
        except CarafeError as exc:
            fail(exc.message)
        span.set_attribute(attr.CARAFE_KEY_ID, rec.key_id)
    if as_json:
        print_json({"key": key, **{k: v for k, v in rec.public().items() if k not in ("created_at", "revoked")}})
        return
    console.print(
        f"Created key [bold]{rec.key_id}[/] for [bold]{rec.user}[/] "
        f"(groups: {', '.join(rec.groups) or '-'}; roles: {', '.join(rec.roles) or '-'}; {rec.rpm} rpm)"
    )
    console.print("Store it now; it is not shown again:")
    typer.echo(key)


@app.command("list")
def list_keys(config: Path | None = ConfigOption, as_json: bool = JsonOption) -> None:
    """List keys (never the secrets)."""
    cfg = config_or_exit(config)
    recs = open_key_store(cfg).list()
    if as_json:
        print_json([r.public() for r in recs])
        return
    table = Table("key id", "user", "groups", "roles", "models", "rpm", "tpm", "team", "created", "state")
    for r in recs:
        created = dt.datetime.fromtimestamp(r.created_at, dt.UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(
            r.key_id,
            r.user,
            ",".join(r.groups),
            ",".join(r.roles),
            "all" if r.models is None else ",".join(r.models),
            str(r.rpm),
            str(r.tpm or "-"),
            r.team or "-",
            created,
            "[red]revoked[/]" if r.revoked else "active",
        )
    console.print(table)


@app.command("revoke")
def revoke(
    key_id: str = typer.Argument(..., help="The key id shown by `carafe keys list`"), config: Path | None = ConfigOption
) -> None:
    """Revoke a key: committed before this returns; every gateway refuses it within state.cache_ttl_s."""
    cfg = config_or_exit(config)
    store = open_key_store(cfg)
    with admin_span(cfg, "carafe.admin.keys.revoke", **{"carafe.key.id": key_id}):
        try:
            store.revoke(key_id, actor="cli")
        except CarafeError as exc:
            fail(exc.message)
    console.print(f"Revoked key {key_id} (in {where(cfg)})")


@app.command("limits")
def limits(
    key_id: str = typer.Argument(..., help="The key id shown by `carafe keys list`"),
    rpm: int | None = typer.Option(None, "--rpm", help="Requests per minute"),
    tpm: int | None = typer.Option(None, "--tpm", help="Tokens (prompt + generated) per minute"),
    config: Path | None = ConfigOption,
) -> None:
    """Change a key's rate limits (a limit not given is kept); every gateway applies it within state.cache_ttl_s."""
    cfg = config_or_exit(config)
    store = open_key_store(cfg)
    with admin_span(cfg, "carafe.admin.keys.limits", **{"carafe.key.id": key_id}):
        try:
            rec = store.set_limits(key_id, rpm=rpm, tpm=tpm, actor="cli")
        except CarafeError as exc:
            fail(exc.message)
    console.print(f"Key {key_id}: rpm {rec.rpm}, tpm {rec.tpm or 'no limit'}")


@app.command("budget")
def budget(
    scope: str = typer.Argument(..., help="key:<key id>, user:<name> or team:<name>"),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="Tokens (prompt + generated) allowed per window"),
    max_cost: float | None = typer.Option(
        None, "--max-cost", help="Cost allowed per window, at state.prices (prompt and generated tokens)"
    ),
    window: str = typer.Option("day", "--window", help="day or month (UTC calendar)"),
    config: Path | None = ConfigOption,
) -> None:
    """Set a token and/or cost budget (a part not given is kept); every gateway enforces it within a few seconds."""
    cfg = config_or_exit(config)
    state = open_state(cfg.state, cfg.data_dir)
    try:
        rule = Budgets(state.db).set(scope, window, max_tokens, max_cost=max_cost, actor="cli")  # type: ignore[arg-type]
    except CarafeError as exc:
        fail(exc.message)
    console.print(f"Budget for {rule.scope}: {rule.describe()}")
