"""`carafe keys`: create, list and revoke API keys (stored hashed)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
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
from carafe.errors import CarafeError
from carafe.gateway.auth import KeyStore
from carafe.gateway.telemetry import attributes as attr

app = typer.Typer(no_args_is_help=True)


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@app.command("create")
def create(
    user: str = typer.Option(..., "--user", "-u", help="Who the key belongs to"),
    groups: str = typer.Option("", "--groups", "-g", help="Comma-separated groups (document ACLs match these)"),
    admin: bool = typer.Option(False, "--admin", help="Grant the admin role (admin API)"),
    models: str | None = typer.Option(
        None, "--models", help="Comma-separated models/adapters it may use (default: all)"
    ),
    rpm: int | None = typer.Option(None, "--rpm", help="Requests per minute (default: auth.default_rpm)"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Create a key and print it ONCE (only its hash is stored)."""
    cfg = config_or_exit(config)
    store = KeyStore(cfg.keys_file)
    with admin_span(cfg, "carafe.admin.keys.create", **{"carafe.key.user": user}) as span:
        try:
            key, rec = store.create(
                user,
                groups=_split(groups),
                admin=admin,
                models=_split(models) if models is not None else None,
                rpm=rpm or cfg.auth.default_rpm,
            )
        except CarafeError as exc:
            fail(exc.message)
        span.set_attribute(attr.CARAFE_KEY_ID, rec.key_id)
    if as_json:
        print_json(
            {
                "key": key,
                "key_id": rec.key_id,
                "user": rec.user,
                "groups": rec.groups,
                "roles": rec.roles,
                "models": rec.models,
                "rpm": rec.rpm,
            }
        )
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
    recs = KeyStore(cfg.keys_file).list()
    if as_json:
        print_json([{k: v for k, v in asdict(r).items() if k != "secret_sha256"} for r in recs])
        return
    table = Table("key id", "user", "groups", "roles", "models", "rpm", "created", "state")
    for r in recs:
        created = dt.datetime.fromtimestamp(r.created_at, dt.UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(
            r.key_id,
            r.user,
            ",".join(r.groups),
            ",".join(r.roles),
            "all" if r.models is None else ",".join(r.models),
            str(r.rpm),
            created,
            "[red]revoked[/]" if r.revoked else "active",
        )
    console.print(table)


@app.command("revoke")
def revoke(
    key_id: str = typer.Argument(..., help="The key id shown by `carafe keys list`"), config: Path | None = ConfigOption
) -> None:
    """Revoke a key: it stops working at once (the gateway re-reads the file)."""
    cfg = config_or_exit(config)
    with admin_span(cfg, "carafe.admin.keys.revoke", **{"carafe.key.id": key_id}):
        try:
            KeyStore(cfg.keys_file).revoke(key_id)
        except CarafeError as exc:
            fail(exc.message)
    console.print(f"Revoked key {key_id}")
