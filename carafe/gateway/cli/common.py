"""What every `carafe` sub-command shares: config loading, error exits, output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from carafe.errors import CarafeError
from carafe.gateway.config import CarafeConfig, load_config

console = Console()
err_console = Console(stderr=True)

ConfigOption = typer.Option(None, "--config", "-c", help="carafe.yaml to use (default: $CARAFE_CONFIG or ./carafe.yaml)")
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
