"""The `carafe` command: composes every package's sub-commands."""

from __future__ import annotations

import os

import typer

from carafe.cli import adapters, audit, chat, config_cmd, demo, guard, index, keys, serve, taxonomy, tune

app = typer.Typer(
    name="carafe",
    help="Carafe: serve an open model with your LoRA adapters, permission-aware retrieval, guardrails and audit "
    "traces.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _entry() -> None:
    # Models ship inside PyPI packages: never ask a hub (set here, by the entry point, not on import).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


for command in (serve, chat, demo):
    command.register(app)
for group, name, help_text in (
    (keys, "keys", "Manage API keys"),
    (config_cmd, "config", "Show the effective configuration"),
    (adapters, "adapters", "Manage the adapter registry and hot-swap"),
    (index, "index", "Index documents and search them as a principal"),
    (guard, "guard", "Try the guardrails on a text"),
    (taxonomy, "taxonomy", "Validate, diff and convert InstructLab-style taxonomies"),
    (tune, "tune", "Generate data, train, evaluate and publish adapters"),
    (audit, "audit", "Query the audit trail (traces)"),
):
    app.add_typer(group.app, name=name, help=help_text)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
