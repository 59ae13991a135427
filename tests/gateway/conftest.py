"""A real gateway (real model, real uvicorn, real keys) shared by the gateway tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import openai
import pytest

from carafe.gateway.app import create_app
from carafe.gateway.config import load_config
from tests.conftest import MODELS_CACHE
from tests.servers import RunningServer, serve_in_thread

BASE_MODEL = "SmolLM2-135M-Instruct"


@dataclass
class Gateway:
    server: RunningServer
    admin_key: str
    user_key: str
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def state(self):
        return self.server.app.state.carafe

    def client(self, key: str | None = None, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key or self.user_key, max_retries=0, **kw)

    def async_client(self, key: str | None = None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=key or self.user_key, max_retries=0)


def make_gateway(tmp_path_factory, name: str, **server) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp(name)
    cfg = load_config(None, data_dir=data, models_cache=MODELS_CACHE, server=server)
    app = create_app(cfg)
    keys = app.state.carafe.keys
    admin_key, _ = keys.create("root", admin=True, rpm=100_000)
    user_key, _ = keys.create("alice", groups=["hr"], rpm=100_000)
    running = serve_in_thread(app)
    try:
        yield Gateway(running, admin_key, user_key)
    finally:
        running.stop()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    yield from make_gateway(tmp_path_factory, "gateway")
