"""`carafe demo`: the one-command start — demo keys, example data indexed, gateway up."""

from __future__ import annotations

from pathlib import Path

import typer

from carafe.cli.common import ConfigOption, config_or_exit, console
from carafe.cli.keys import open_key_store

# Every demo user is in `everyone`, the group examples/policies/public/ is shared with (its _acl.yaml);
# staff are also in `employees` (the handbook's ACL). The ACL filter never treats "no groups" as "public".
DEMO_USERS: list[tuple[str, list[str], bool]] = [
    ("admin", [], True),
    ("hana", ["hr", "employees", "everyone"], False),
    ("finn", ["finance", "employees", "everyone"], False),
    ("eli", ["engineering", "employees", "everyone"], False),
    ("lea", ["legal", "employees", "everyone"], False),
    ("guest", ["everyone"], False),  # public documents only
]


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        config: Path | None = ConfigOption,
        host: str | None = typer.Option(None, "--host"),
        port: int | None = typer.Option(None, "--port", "-p"),
        no_serve: bool = typer.Option(False, "--no-serve", help="Prepare keys and data, do not start the server"),
    ) -> None:
        """Create fresh demo keys, index the example documents, and start the gateway."""
        from carafe.adapters.cores import quiet_openmp

        quiet_openmp()  # before indexing loads torch: the engine's idle OpenMP workers must not spin
        cfg = config_or_exit(config)
        store = open_key_store(cfg)
        demo_names = {u for u, _, _ in DEMO_USERS}
        for rec in store.list():  # keys of an earlier demo run stop working
            if rec.user in demo_names and not rec.revoked:
                store.revoke(rec.key_id)
        # Plain lines, never wrapped or cut by the terminal's width: the keys are shown once and get copied.
        console.print("[bold]Demo API keys[/] (shown once; older demo keys are revoked):")
        for user, groups, admin in DEMO_USERS:
            key, rec = store.create(user, groups=groups, admin=admin, rpm=cfg.auth.default_rpm)
            who = f"{user} ({'admin' if admin else ','.join(groups) or 'no groups'})"
            typer.echo(f"  {who:<20} {key}")
        _prepare_data(cfg)
        h, p = host or cfg.server.host, port or cfg.server.port
        console.print(
            "Try it:\n"
            f"  curl http://{h}:{p}/v1/chat/completions -H 'Authorization: Bearer <key>' "
            "-H 'Content-Type: application/json' \\\n"
            '    -d \'{"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "Hello!"}]}\'\n'
            f"  carafe chat --base-url http://{h}:{p}/v1 --api-key <key>",
        )
        if no_serve:
            return
        from carafe.cli.serve import run_server

        run_server(cfg, host=h, port=p, log_level="info")


def _prepare_data(cfg) -> None:
    """Index the configured document sources (the example policies in the demo config)."""
    if not cfg.indexer.sources:
        return
    from carafe.cli.index import _open, _run_sync

    index = _open(cfg)
    try:
        _run_sync(index, None, as_json=False)
    finally:
        index.close()
