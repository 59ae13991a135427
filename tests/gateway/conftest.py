"""A real gateway (real model, real uvicorn, real keys) shared by the gateway tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

from carafe.config import load_config
from carafe.gateway.app import create_app
from carafe.guards import CheckSettings, GuardsConfig, PolicyConfig
from tests.conftest import MODELS_CACHE
from tests.gateway.telemetry.conftest import telemetry  # noqa: F401  (the trace-file fixture, for every gateway test)
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


def make_gateway(tmp_path_factory, name: str, engine: dict | None = None, **server) -> Iterator[Gateway]:
    """A gateway on a fresh data dir; ``engine``: ``adapters.engine`` settings (default: the fp32 engine)."""
    data = tmp_path_factory.mktemp(name)
    extra = {"adapters": {"engine": engine}} if engine else {}
    cfg = load_config(None, data_dir=data, models_cache=MODELS_CACHE, server=server, **extra)
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


@pytest.fixture(scope="session")
def native_gateway(tmp_path_factory) -> Iterator[Gateway]:
    """A gateway on the int4 native engine (what ``make run`` serves)."""
    yield from make_gateway(tmp_path_factory, "native-gateway", engine={"quantize": "int4", "kernels": "native"})


def write_doc(root: Path, rel: str, acl: str | None, title: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    front = f"---\ntitle: {title}\n" + (f"acl:\n  {acl}\n" if acl else "") + "---\n"
    path.write_text(f"{front}\n# {title}\n\n{text}\n")


class RagGateway:
    def __init__(self, server: RunningServer, keys: dict[str, str], docs: Path) -> None:
        self.server, self.keys, self.docs = server, keys, docs

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, user: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.keys[user], max_retries=0)

    def sync(self) -> dict:
        r = httpx.post(
            f"{self.url}/admin/index/sync", headers={"Authorization": f"Bearer {self.keys['root']}"}, timeout=300
        )
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="session")
def rag(tmp_path_factory) -> Iterator[RagGateway]:
    """A gateway over a small document set with one secret per ACL (see test_retrieval_e2e.DOCS)."""
    from tests.gateway.test_retrieval_e2e import DOCS, USERS

    root = tmp_path_factory.mktemp("rag")
    docs = root / "docs"
    for rel, (acl, title, text) in DOCS.items():
        write_doc(docs, rel, acl, title, text)
    cfg = load_config(
        None,
        data_dir=root / "data",
        models_cache=MODELS_CACHE,
        indexer={"sources": [{"name": "docs", "path": str(docs)}]},
        routing={
            "retrieval": {"enabled": True, "top_k": 5},
            "aliases": {
                "grounded-only": {"retrieval": {"enabled": True, "top_k": 3}, "guard_policy": "block-ungrounded"}
            },
        },
        guards={
            "policies": {
                **GuardsConfig().policies,
                "block-ungrounded": PolicyConfig(output={"grounding": CheckSettings(action="block", threshold=1.01)}),
            }
        },
    )
    app = create_app(cfg)
    keys = {u: app.state.carafe.keys.create(u, groups=g, admin=a, rpm=100_000)[0] for u, (g, a) in USERS.items()}
    server = serve_in_thread(app)
    gw = RagGateway(server, keys, docs)
    gw.sync()
    try:
        yield gw
    finally:
        server.stop()
