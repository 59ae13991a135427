"""VLLMEngine against a stand-in vLLM server (vLLM cannot run here): a small
uvicorn app that mimics vLLM's documented endpoints, including its sharp edges —
a load that answers 200 for a path that does not exist, 400 on re-loading a
name, and 500s that must not be retried."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from carafe.adapters.config import EngineConfig
from carafe.adapters.engine import ChatMessage, SamplingParams
from carafe.adapters.errors import AdapterConflict, AdapterNotFound, EngineUnavailable, InvalidAdapter
from carafe.adapters.vllm import VLLMEngine
from tests.servers import free_port, serve_in_thread

BASE = "SmolLM2-135M-Instruct"
pytestmark = pytest.mark.asyncio(loop_scope="session")  # the same loop as the (session-scoped) async fixtures


def vllm_like_app() -> FastAPI:
    app = FastAPI()
    app.state.loras = {}
    app.state.calls = Counter()
    app.state.bodies = []
    app.state.fail_generation = False
    app.state.token_delay = 0.0

    def error(status: int, message: str, kind: str) -> JSONResponse:
        return JSONResponse({"object": "error", "message": message, "type": kind, "code": status}, status)

    @app.get("/v1/models")
    async def models() -> dict:
        cards = [{"id": BASE, "object": "model", "root": "/models/smol", "parent": None, "max_model_len": 2048}]
        cards += [{"id": n, "object": "model", "root": p, "parent": BASE} for n, p in app.state.loras.items()]
        return {"object": "list", "data": cards}

    @app.post("/v1/load_lora_adapter")
    async def load(request: Request):
        body = await request.json()
        app.state.calls["load"] += 1
        await asyncio.sleep(0.05)  # leave room for races
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return error(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput")
        if name in app.state.loras:
            return error(400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput")
        app.state.loras[name] = path  # like vLLM: a missing path is accepted here
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    @app.post("/v1/unload_lora_adapter")
    async def unload(request: Request):
        name = (await request.json()).get("lora_name")
        if name not in app.state.loras:
            return error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        del app.state.loras[name]
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    async def generate(request: Request, chat: bool):
        body = await request.json()
        app.state.bodies.append(body)
        app.state.calls["generate"] += 1
        model = body["model"]
        if app.state.fail_generation:
            return error(500, "engine dead", "InternalServerError")
        if model != BASE and model not in app.state.loras:
            return error(404, f"The model `{model}` does not exist.", "NotFoundError")
        if model != BASE and not Path(app.state.loras[model]).exists():
            return error(400, f"Loading lora {model} failed: No adapter found for {app.state.loras[model]}",
                         "BadRequestError")
        words = ["Hello", " from", f" {model}"]
        if body.get("ignore_eos"):  # a long answer, for tests that need a request in flight
            words += [" ."] * body["max_tokens"]
        words = words[: body["max_tokens"]]
        finish = "length" if len(words) == body["max_tokens"] else "stop"

        def event(text: str, fin: str | None) -> str:
            choice = {"index": 0, "finish_reason": fin, **({"delta": {"content": text}} if chat else {"text": text})}
            return "data: " + json.dumps({"choices": [choice]}) + "\n\n"

        async def stream():
            for i, w in enumerate(words):
                await asyncio.sleep(app.state.token_delay)
                yield event(w, finish if i == len(words) - 1 else None)
            yield "data: " + json.dumps({"choices": [], "usage": {"prompt_tokens": 5,
                                                                  "completion_tokens": len(words)}}) + "\n\n"
            yield "data: [DONE]\n\n"

        if not body.get("stream"):
            return {"choices": [{"index": 0, "text": "".join(words), "finish_reason": finish}]}
        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await generate(request, True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await generate(request, False)

    return app


@pytest.fixture(scope="module")
def fake_vllm():
    server = serve_in_thread(vllm_like_app(), timeout=30)
    yield server
    server.stop()


@pytest.fixture
async def engine(fake_vllm):
    fake_vllm.app.state.loras.clear()
    fake_vllm.app.state.calls.clear()
    fake_vllm.app.state.fail_generation = False
    fake_vllm.app.state.token_delay = 0.0
    eng = VLLMEngine(EngineConfig(backend="vllm", vllm_url=fake_vllm.url, vllm_model_digest="sha256:abc"))
    await eng.start()
    yield eng
    await eng.close()


async def collect(stream) -> tuple[str, object]:
    chunks = [c async for c in stream]
    return "".join(c.text for c in chunks), chunks[-1]


async def test_start_learns_the_model_and_streams_chat_and_completions(engine, fake_vllm):
    assert engine.ready and engine.model_id == BASE and engine.max_model_len == 2048
    assert engine.model_digest == "sha256:abc"
    text, last = await collect(engine.chat([ChatMessage("user", "hi")], SamplingParams(max_tokens=8, top_k=5)))
    assert text == f"Hello from {BASE}"
    assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == ("stop", 5, 3)
    sent = fake_vllm.app.state.bodies[-1]
    assert sent["top_k"] == 5 and "min_p" not in sent and sent["stream_options"] == {"include_usage": True}
    text, last = await collect(engine.complete("Once", SamplingParams(max_tokens=2)))
    assert text == "Hello from" and last.finish_reason == "length"


async def test_load_is_verified_idempotent_and_unloadable(engine, fake_vllm, tmp_path):
    info = await engine.load_adapter("hr@1", str(tmp_path))
    assert info.name == "hr@1" and [a.name for a in engine.adapters()] == ["hr@1"]
    again = await engine.load_adapter("hr@1", str(tmp_path))  # same path: nothing sent
    assert again.path == str(tmp_path) and fake_vllm.app.state.calls["load"] == 1
    text, _ = await collect(engine.chat([ChatMessage("user", "hi")], SamplingParams(), adapter="hr@1"))
    assert text == "Hello from hr@1"
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(AdapterConflict, match="unload it first"):
        await engine.load_adapter("hr@1", str(other))
    assert (await engine.load_adapter("hr@1", str(other), replace=True)).path == str(other)
    await engine.unload_adapter("hr@1")
    assert engine.adapters() == [] and fake_vllm.app.state.loras == {}
    with pytest.raises(AdapterNotFound, match="cannot be found"):
        await engine.unload_adapter("hr@1")


async def test_a_load_that_vllm_accepts_for_a_missing_path_fails_and_is_undone(engine, fake_vllm, tmp_path):
    with pytest.raises(InvalidAdapter, match="cannot serve it"):
        await engine.load_adapter("ghost@1", str(tmp_path / "does-not-exist"))
    assert "ghost@1" not in fake_vllm.app.state.loras and engine.adapters() == []


async def test_concurrent_loads_of_one_name_send_one_load(engine, fake_vllm, tmp_path):
    results = await asyncio.gather(*(engine.load_adapter("x@1", str(tmp_path)) for _ in range(5)))
    assert {r.name for r in results} == {"x@1"}
    assert fake_vllm.app.state.calls["load"] == 1


async def test_unknown_adapter_is_404(engine):
    with pytest.raises(AdapterNotFound):
        await collect(engine.chat([ChatMessage("user", "hi")], SamplingParams(), adapter="nope"))


async def test_server_errors_are_503_and_never_retried(engine, fake_vllm):
    fake_vllm.app.state.fail_generation = True
    with pytest.raises(EngineUnavailable, match="engine dead"):
        await collect(engine.chat([ChatMessage("user", "hi")], SamplingParams()))
    assert fake_vllm.app.state.calls["generate"] == 1


async def test_vllm_down_is_a_clear_503_and_start_does_not_crash():
    port = free_port()
    eng = VLLMEngine(EngineConfig(backend="vllm", vllm_url=f"http://127.0.0.1:{port}",
                                  vllm_connect_retries=1, vllm_connect_timeout_s=1))
    await eng.start()
    assert not eng.ready
    t0 = time.monotonic()
    with pytest.raises(EngineUnavailable, match="cannot be reached.*is it running"):
        await collect(eng.chat([ChatMessage("user", "hi")], SamplingParams()))
    with pytest.raises(EngineUnavailable):
        await eng.load_adapter("a@1", "/tmp")
    assert time.monotonic() - t0 < 30  # refused connections fail fast, not after the read timeout
    late = serve_in_thread(vllm_like_app(), port=port, timeout=30)  # vLLM comes up after the gateway
    try:
        await eng.refresh()  # what the reconcile loop does
        assert eng.ready and eng.model_id == BASE
    finally:
        late.stop()
        await eng.close()
