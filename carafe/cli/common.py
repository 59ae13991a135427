"""What every `carafe` sub-command shares: config loading, error exits, output."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from carafe.config import CarafeConfig, load_config
from carafe.errors import CarafeError

console = Console()
err_console = Console(stderr=True)

ConfigOption = typer.Option(
    None, "--config", "-c", help="carafe.yaml to use (default: $CARAFE_CONFIG or ./carafe.yaml)"
)
JsonOption = typer.Option(False, "--json", help="Print JSON for scripts instead of tables")


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def config_or_exit(path: Path | None) -> CarafeConfig:
    try:
        return load_config(path)
    except CarafeError as exc:
        fail(exc.message, 2)
    except Exception as exc:  # pydantic ValidationError, YAML errors
        fail(f"invalid configuration: {exc}", 2)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@contextmanager
def admin_span(cfg: CarafeConfig, name: str, **attrs: Any) -> Iterator[Any]:
    """Trace one admin change made from the terminal, like the admin API does.

    The span goes to the configured exporter (the audit file by default) with
    the OS user as ``carafe.principal``, so `carafe audit` and a collector see
    CLI changes beside the HTTP ones. Tracing trouble never stops the change.
    """
    from carafe.gateway.telemetry import attributes as attr
    from carafe.gateway.telemetry.attributes import admin_span as span_of
    from carafe.gateway.telemetry.setup import setup_telemetry

    telemetry = None
    try:
        telemetry = setup_telemetry(cfg.telemetry, data_dir=cfg.data_dir, service_name="carafe-cli")
    except Exception as exc:  # an unwritable trace folder must not block an admin
        err_console.print(f"[yellow]warning:[/] tracing is off for this command: {exc}")
    try:
        with span_of(name, getpass.getuser(), **{attr.CARAFE_ADMIN_VIA: "cli", **attrs}) as span:
            yield span
    finally:
        if telemetry is not None:
            telemetry.shutdown()
