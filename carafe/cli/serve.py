"""`carafe serve`: run the gateway under uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from carafe.cli.common import ConfigOption, config_or_exit, console
from carafe.cli.keys import where


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        host: str | None = typer.Option(None, "--host", help="Address to listen on (default: server.host)"),
        port: int | None = typer.Option(None, "--port", "-p", help="Port (default: server.port)"),
        config: Path | None = ConfigOption,
        log_level: str = typer.Option("info", "--log-level", help="uvicorn log level"),
    ) -> None:
        """Run the OpenAI-compatible gateway (loads the base model, then listens)."""
        cfg = config_or_exit(config)
        run_server(cfg, host=host, port=port, log_level=log_level)


def run_server(cfg, *, host: str | None, port: int | None, log_level: str = "info") -> None:
    """Configure telemetry (this process is the entry point) and run uvicorn."""
    import uvicorn

    from carafe.adapters.cores import quiet_openmp

    quiet_openmp()  # before torch loads: the engine's OpenMP workers must not spin on the event loop's core
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    telemetry = None
    try:
        from carafe.gateway.telemetry.setup import setup_telemetry
    except ImportError:
        setup_telemetry = None  # type: ignore[assignment]
    if setup_telemetry is not None:
        telemetry = setup_telemetry(cfg.telemetry, data_dir=cfg.data_dir)
    from carafe.gateway.app import create_app
    from carafe.gateway.server import uvicorn_config

    app_ = create_app(cfg)
    h, p = host or cfg.server.host, port or cfg.server.port
    console.print(
        f"Carafe gateway: model {cfg.adapters.engine.model} ({cfg.adapters.engine.backend}) "
        f"on http://{h}:{p}/v1 — state in {where(cfg)}"
    )
    try:
        uvicorn.Server(uvicorn_config(app_, cfg.server, host=h, port=p, log_level=log_level)).run()
    finally:
        if telemetry is not None:
            telemetry.shutdown()
