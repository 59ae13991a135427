"""Hot-swap safety on the path requests really take: a chat request through the
gateway's HTTP endpoint counts as in flight on its adapter version, so filling the
resident set while it streams evicts another version, never the one streaming.

Real model (embedded engine), real uvicorn, real ``openai`` SDK, two adapter slots.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from carafe.config import load_config
from carafe.gateway.app import create_app
from tests.conftest import MODELS_CACHE
from tests.lora import make_lora
from tests.servers import serve_in_thread

GREEDY = {"temperature": 0, "max_tokens": 48, "extra_body": {"ignore_eos": True}}
QUESTION = [{"role": "user", "content": "Write a short poem about the sea."}]


@pytest.fixture(scope="module")
def two_slots(tmp_path_factory):
    root = tmp_path_factory.mktemp("two-slots")
    cfg = load_config(
        None,
        data_dir=root / "data",
        models_cache=MODELS_CACHE,
        guards={"enabled": False},
        adapters={
            "engine": {"max_loras": 2},
            "registry": {"reconcile_interval_s": 0, "retire_grace_s": 0, "warm_rollback": False},
        },
    )
    app = create_app(cfg)
    admin, _ = app.state.carafe.keys.create("root", admin=True, rpm=100_000)
    server = serve_in_thread(app)
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}, timeout=120) as c:
            for seed, name in enumerate(("oldest", "second", "third"), start=1):
                src = make_lora(root / f"lora-{name}", rank=8, seed=seed, scale=0.2)
                r = c.post("/admin/adapters", json={"path": str(src), "name": name})
                assert r.status_code == 201, r.text
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=admin, max_retries=0, timeout=120)
        yield app.state.carafe, client
    finally:
        server.stop()


def test_filling_the_resident_set_never_evicts_a_streaming_version(two_slots):
    state, client = two_slots
    expected = client.chat.completions.create(model="oldest", messages=QUESTION, **GREEDY)
    expected_text = expected.choices[0].message.content
    assert expected.model == "oldest@1"

    stream = client.chat.completions.create(model="oldest", messages=QUESTION, stream=True, **GREEDY)
    chunks = iter(stream)
    parts = [next(chunks).choices[0].delta.content or ""]  # headers are sent once generation has begun
    assert state.adapters.in_flight("oldest@1") == 1  # the request path is tracked

    # "second" takes the free slot; "third" needs one: the idle "second" goes, not the streaming "oldest"
    for name in ("second", "third"):
        r = client.chat.completions.create(model=name, messages=QUESTION, temperature=0, max_tokens=2)
        assert r.model == f"{name}@1"
    assert sorted(state.adapters.resident()) == ["oldest@1", "third@1"]

    for chunk in chunks:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
    assert "".join(parts) == expected_text  # finished on its own version, weights intact
    assert state.adapters.in_flight("oldest@1") == 0
