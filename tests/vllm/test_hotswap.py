"""Hot-swap safety on the real request path: the resident set is full (max_loras)
and a request still streams on the least recently used adapter when another one
is needed; the streaming version must stay loaded and finish on its version.

This goes through the gateway's HTTP path (openai SDK -> uvicorn -> serving_chat
-> state.engine -> vLLM). vLLM itself keeps generating after an unload, so the
check is Carafe's: the adapter manager must not evict a version in flight."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.vllm.conftest import Gateway, vllm_models
from tests.vllm.launch import MAX_LORAS, VLLMServer

NAMES = [f"lru{i}" for i in range(MAX_LORAS + 1)]
TOKENS = 128

pytestmark = pytest.mark.vllm


def ask(gateway: Gateway, model: str, **kw: object) -> str:
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=1, **kw
    )
    raw.parse()
    return raw.headers["x-carafe-adapter"]


def test_a_full_lru_never_evicts_the_version_a_request_streams_on(
    gateway: Gateway, vllm_server: VLLMServer, loras: list[Path]
) -> None:
    manager = gateway.state.adapters
    with gateway.http() as c:
        for i, name in enumerate(NAMES):
            assert c.post("/admin/adapters", json={"path": str(loras[i % len(loras)]), "name": name}).status_code == 201
        try:
            for name in NAMES[:MAX_LORAS]:  # fill the resident set
                assert ask(gateway, name) == f"{name}@1"
            assert sorted(manager.resident()) == sorted(f"{n}@1" for n in NAMES[:MAX_LORAS])

            stream = gateway.openai().chat.completions.with_raw_response.create(
                model=NAMES[0],
                messages=[{"role": "user", "content": "Tell me a story."}],
                max_tokens=TOKENS,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
            )
            assert stream.headers["x-carafe-adapter"] == "lru0@1"
            chunks = stream.parse()
            first = next(iter(chunks))
            done = threading.Event()
            collected: list = [first]

            def drain() -> None:
                collected.extend(chunks)
                done.set()

            # the stream is open on lru0@1; the others are used since, so lru0@1 is the least recently
            # used; then a fifth adapter needs a slot
            for name in NAMES[1:MAX_LORAS]:
                assert ask(gateway, name) == f"{name}@1"
            assert ask(gateway, NAMES[-1]) == f"{NAMES[-1]}@1"
            in_vllm = set(vllm_models(vllm_server))
            resident = set(manager.resident())
            still_streaming = not done.is_set()
            reader = threading.Thread(target=drain)
            reader.start()
            reader.join(120)
            assert done.is_set(), "the stream did not finish"
            usage = collected[-1].usage
            assert usage is not None and usage.completion_tokens == TOKENS  # it completed, on its version
            assert {c.model for c in collected if c.model} <= {"lru0@1", NAMES[0]}
            if not still_streaming:
                pytest.skip("the stream ended before the fifth adapter loaded; nothing was tested")
            kept = "lru0@1" in in_vllm and "lru0@1" in resident
            assert kept, f"lru0@1 was evicted while a request streamed on it (vLLM has {sorted(in_vllm)})"
            assert "lru1@1" not in resident  # the least recently used idle version went instead
        finally:
            for name in NAMES:
                c.delete(f"/admin/adapters/{name}")
