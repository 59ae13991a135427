"""Fixtures for the real-vLLM suite (``pytest -m vllm``): ONE vLLM CPU server per
session, and Carafe gateways (real uvicorn) with ``adapters.engine.backend: vllm``
in front of it.

Skipped, with the command to run, when the vLLM environment is not installed
(``scripts/vllm-env``; ``CARAFE_VLLM_VENV`` points at it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from carafe.config import load_config
from carafe.gateway.app import create_app
from tests.lora import make_lora
from tests.servers import RunningServer, free_port, serve_in_thread
from tests.vllm.launch import MAX_LORAS, VLLMServer, base_model_dir, vllm_python


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test here waits on a real server: a longer per-test timeout."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.timeout(900))


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    python = vllm_python()
    if python is None:
        pytest.skip("vLLM is not installed: run scripts/vllm-env (or set CARAFE_VLLM_VENV)")
    log = Path(os.environ.get("CARAFE_VLLM_LOG") or tmp_path_factory.mktemp("vllm") / "vllm.log")
    server = VLLMServer(python, base_model_dir(), free_port(), log)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def base_digest() -> str:
    from carafe.adapters.base_model import prepare_base_model

    return prepare_base_model("smollm2", Path(os.environ["CARAFE_TEST_MODELS"])).digest


@pytest.fixture(scope="session")
def loras(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three small real PEFT adapters (rank 4, different weights)."""
    root = tmp_path_factory.mktemp("loras")
    return [make_lora(root / f"lora{seed}", rank=4, seed=seed) for seed in (1, 2, 3)]


class Gateway:
    """A running Carafe gateway and the keys to call it."""

    def __init__(self, server: RunningServer, admin: str, user: str) -> None:
        self.server, self.admin, self.user = server, admin, user

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def state(self) -> Any:
        return self.server.app.state.carafe

    def http(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key or self.admin}"}, timeout=120)

    def openai(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key or self.user, max_retries=0, timeout=120)


def start_gateway(data: Path, vllm: VLLMServer, digest: str, **registry: Any) -> Gateway:
    cfg = load_config(
        None,
        data_dir=data,
        guards={"enabled": False},
        adapters={
            "engine": {
                "backend": "vllm",
                "vllm_url": vllm.url,
                "vllm_model_digest": digest,
                "max_loras": MAX_LORAS,
                "vllm_connect_retries": 1,
                "vllm_connect_timeout_s": 2,
                "vllm_timeout_s": 60,
            },
            "registry": {"reconcile_interval_s": 0, "retire_grace_s": 0, **registry},
        },
    )
    app = create_app(cfg)
    keys = app.state.carafe.keys
    admin, _ = keys.create("root", admin=True, rpm=1_000_000)
    user, _ = keys.create("alice", rpm=1_000_000)
    return Gateway(serve_in_thread(app, timeout=120), admin, user)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, vllm_server: VLLMServer, base_digest: str) -> Iterator[Gateway]:
    """A gateway whose reconcile runs only when asked (POST /admin/adapters/sync)."""
    gw = start_gateway(tmp_path_factory.mktemp("gw"), vllm_server, base_digest)
    yield gw
    gw.server.stop()


def vllm_models(vllm: VLLMServer) -> dict[str, dict[str, Any]]:
    """What the real vLLM serves now, asked directly: id -> model card."""
    return {m["id"]: m for m in httpx.get(f"{vllm.url}/v1/models", timeout=10).json()["data"]}
