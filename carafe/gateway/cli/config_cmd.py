"""`carafe config show`: the effective configuration, secrets hidden."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import SecretStr

from carafe.gateway.cli.common import ConfigOption, JsonOption, config_or_exit, console, print_json

app = typer.Typer(no_args_is_help=True)

SECRET_WORDS = ("key", "secret", "token", "password")


def redacted(cfg: Any) -> Any:
    data = cfg.model_dump(mode="python")

    def walk(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            return {k: walk(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, key) for v in node]
        if isinstance(node, SecretStr):
            return "**********"
        if node is not None and any(w in key.lower() for w in SECRET_WORDS) and isinstance(node, str):
            return "**********"
        if isinstance(node, Path):
            return str(node)
        return node

    return walk(data)


@app.command("show")
def show(config: Path | None = ConfigOption, as_json: bool = JsonOption) -> None:
    """Print the effective config (file + CARAFE_* env overrides + defaults)."""
    cfg = config_or_exit(config)
    data = redacted(cfg)
    if as_json:
        print_json(data)
        return
    source = cfg._yaml_file or "(no file: defaults and environment)"
    console.print(f"# effective configuration from {source}", style="dim")
    console.print(yaml.safe_dump(data, sort_keys=False), end="", markup=False, highlight=False)
