"""The `carafe` command: composes every package's sub-commands."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="carafe",
    help="Carafe: serve an open model with your LoRA adapters, permission-aware retrieval, guardrails and audit traces.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Sub-command groups, one module each under carafe/cli/. Each module
# exposes `app` (a typer.Typer) or `register(app)` for top-level commands.
_GROUPS: list[tuple[str, str | None, str]] = [
    ("serve", None, "Run the gateway"),
    ("chat", None, "Chat with a running gateway in the terminal"),
    ("demo", None, "One-command demo"),
    ("keys", "keys", "Manage API keys"),
    ("config_cmd", "config", "Show the effective configuration"),
    ("adapters", "adapters", "Manage the adapter registry and hot-swap"),
    ("index", "index", "Index documents and search them as a principal"),
    ("guard", "guard", "Try the guardrails on a text"),
    ("taxonomy", "taxonomy", "Validate, diff and convert InstructLab-style taxonomies"),
    ("tune", "tune", "Generate data, train, evaluate and publish adapters"),
    ("audit", "audit", "Query the audit trail (traces)"),
]

for module_name, group, help_text in _GROUPS:
    try:
        module = importlib.import_module(f"carafe.cli.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"carafe.cli.{module_name}":
            continue  # that capability is not built (yet)
        raise
    if group is None:
        module.register(app)
    else:
        app.add_typer(module.app, name=group, help=help_text)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
