"""VLLMEngine against the stand-in vLLM server of tests/servers.py, for fast tests:
it answers like vLLM 0.32 (checked against the real server in tests/vllm),
sharp edges included — a load refused for a missing path (404) or a bad adapter
(500), 400 on re-loading a name, 500s that must not be retried — and, as an
option, older vLLMs' 200 for a path that does not exist."""

from __future__ import annotations

import asyncio
import time

import pytest

from carafe.adapters.config import EngineConfig
from carafe.adapters.engine import ChatMessage, SamplingParams
from carafe.adapters.errors import AdapterConflict, AdapterNotFound, EngineUnavailable, InvalidAdapter
from carafe.adapters.vllm import VLLMEngine
from tests.lora import make_lora
from tests.servers import STANDIN_BASE as BASE
from tests.servers import free_port, serve_in_thread, vllm_like_app

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the same loop as the (session-scoped) async fixtures


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
    fake_vllm.app.state.legacy_lazy_load = False
    eng = VLLMEngine(EngineConfig(backend="vllm", vllm_url=fake_vllm.url, vllm_model_digest="sha256:abc"))
    await eng.start()
    yield eng
    await eng.close()


@pytest.fixture(scope="module")
def lora_dirs(tmp_path_factory) -> tuple[str, str]:
    """Two real (tiny) PEFT adapters: the stand-in, like vLLM, validates a load."""
    root = tmp_path_factory.mktemp("vllm-loras")
    return str(make_lora(root / "a", rank=4, seed=1)), str(make_lora(root / "b", rank=4, seed=2))


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


async def test_load_is_verified_idempotent_and_unloadable(engine, fake_vllm, lora_dirs):
    first, other = lora_dirs
    info = await engine.load_adapter("hr@1", first)
    assert info.name == "hr@1" and [a.name for a in engine.adapters()] == ["hr@1"]
    again = await engine.load_adapter("hr@1", first)  # same path: nothing sent
    assert again.path == first and fake_vllm.app.state.calls["load"] == 1
    text, _ = await collect(engine.chat([ChatMessage("user", "hi")], SamplingParams(), adapter="hr@1"))
    assert text == "Hello from hr@1"
    with pytest.raises(AdapterConflict, match="unload it first"):
        await engine.load_adapter("hr@1", other)
    assert (await engine.load_adapter("hr@1", other, replace=True)).path == other
    await engine.unload_adapter("hr@1")
    assert engine.adapters() == [] and fake_vllm.app.state.loras == {}
    with pytest.raises(AdapterNotFound, match="cannot be found"):
        await engine.unload_adapter("hr@1")


async def test_a_load_of_a_missing_or_bad_adapter_is_refused_and_names_the_path(engine, fake_vllm, tmp_path):
    missing = tmp_path / "does-not-exist"
    with pytest.raises(InvalidAdapter, match=f"cannot load {missing}.*No adapter found"):
        await engine.load_adapter("ghost@1", str(missing))
    big = tmp_path / "big"  # above vLLM's --max-lora-rank: vLLM answers 500
    big.mkdir()
    (big / "adapter_config.json").write_text('{"r": 128}')
    with pytest.raises(InvalidAdapter, match="greater than max_lora_rank"):
        await engine.load_adapter("big@1", str(big))
    assert fake_vllm.app.state.loras == {} and engine.adapters() == []


async def test_an_older_vllm_that_accepts_a_missing_path_is_caught_by_the_probe(engine, fake_vllm, tmp_path):
    fake_vllm.app.state.legacy_lazy_load = True
    with pytest.raises(InvalidAdapter, match="cannot serve it"):
        await engine.load_adapter("ghost@1", str(tmp_path / "does-not-exist"))
    assert "ghost@1" not in fake_vllm.app.state.loras and engine.adapters() == []


async def test_concurrent_loads_of_one_name_send_one_load(engine, fake_vllm, lora_dirs):
    results = await asyncio.gather(*(engine.load_adapter("x@1", lora_dirs[0]) for _ in range(5)))
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
    eng = VLLMEngine(
        EngineConfig(
            backend="vllm", vllm_url=f"http://127.0.0.1:{port}", vllm_connect_retries=1, vllm_connect_timeout_s=1
        )
    )
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
