"""One request, one adapter or one broken pass must never take the engine down (issue 29, C1/H1), and a dead or
stuck engine must say so (not ready, EngineUnavailable) instead of leaving its callers waiting forever.

Every test runs on the fp32 transformers + PEFT engine and on the int4 native engine."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from carafe.adapters.errors import EngineOverloaded, EngineUnavailable, InvalidAdapter
from carafe.adapters.local import LocalEngine
from carafe.errors import InvalidInput, TooLarge
from tests.adapters.conftest import ask, collect, running_engine

STORY = "Tell me a long story."
KINDS = {"fp32": {}, "int4-native": {"quantize": "int4", "kernels": "native"}}


@pytest.fixture(params=list(KINDS))
def engine(request, engine, native_engine):
    return engine if request.param == "fp32" else native_engine


@pytest.fixture(scope="module", params=list(KINDS))
def doomed(request, base_model_dir):
    """An engine of its own, for tests that stall or kill its worker (a short stall limit)."""
    yield from running_engine(stall_timeout_s=1.0, **KINDS[request.param])


def _whole_vocabulary(engine: LocalEngine) -> list[int]:
    return list(range(len(engine._tokenizer)))


async def _until(predicate, what: str) -> None:
    """Poll ``predicate`` with a generous deadline (behaviour, not timing)."""
    for _ in range(1200):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def test_the_whole_vocabulary_as_stop_tokens_is_refused_naming_the_field(engine):
    with pytest.raises(InvalidInput) as info:
        await collect(ask(engine, STORY, stop_token_ids=_whole_vocabulary(engine), min_tokens=1, max_tokens=4))
    assert info.value.param == "stop_token_ids"


async def test_a_row_with_no_allowed_token_fails_alone_while_another_stream_completes(engine, monkeypatch):
    alone, _ = await collect(ask(engine, STORY, temperature=0, max_tokens=24, ignore_eos=True))
    # the attack as shown, with the up-front check out of the way: only the sampler stands between it and the engine
    monkeypatch.setattr(engine, "_check_params", lambda params: None)
    running = ask(engine, STORY, temperature=0, max_tokens=24, ignore_eos=True)
    first = await anext(running)
    attack = ask(engine, STORY, stop_token_ids=_whole_vocabulary(engine), min_tokens=1, max_tokens=4)
    with pytest.raises(InvalidInput, match="ban every token") as info:
        await asyncio.wait_for(collect(attack), 120)
    assert info.value.param == "stop_token_ids"
    rest, chunks = await asyncio.wait_for(collect(running), 120)
    assert first.text + rest == alone
    assert chunks[-1].finish_reason == "length"
    assert engine.ready
    text, _ = await collect(ask(engine, STORY, temperature=0.8, max_tokens=4))
    assert text


def _nan_lora(make_lora, folder: Path) -> Path:
    """A PEFT adapter whose weights are NaN: what a diverged training run leaves."""
    src = make_lora(folder, seed=7)
    out = folder / "nan-lora"
    out.mkdir()
    for f in src.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    tensors = load_file(str(src / "adapter_model.safetensors"))
    save_file({k: torch.full_like(v, float("nan")) for k, v in tensors.items()}, str(out / "adapter_model.safetensors"))
    return out


async def test_an_adapter_with_nan_weights_is_refused_at_load_naming_the_tensor(engine, make_lora, tmp_path):
    with pytest.raises(InvalidAdapter, match=r"lora_A\.weight holds \d+ NaN"):
        await engine.load_adapter("diverged", str(_nan_lora(make_lora, tmp_path)))
    assert engine.ready and "diverged" not in {a.name for a in engine.adapters()}


async def test_an_adapter_with_nan_weights_fails_its_own_requests_only(engine, make_lora, tmp_path, monkeypatch):
    """Defence in depth: should NaN weights get past the load check, only their own requests fail."""
    rank_of = lambda self, folder: json.loads((folder / "adapter_config.json").read_text())["r"]  # noqa: E731
    monkeypatch.setattr(LocalEngine, "_check_fits", rank_of)
    await engine.load_adapter("diverged", str(_nan_lora(make_lora, tmp_path)))
    try:
        alone, _ = await collect(ask(engine, STORY, temperature=0, max_tokens=16, ignore_eos=True))
        running = ask(engine, STORY, temperature=0, max_tokens=16, ignore_eos=True)
        first = await anext(running)
        for temperature in (0.0, 1.0):
            with pytest.raises(EngineUnavailable, match="not numbers"):
                await asyncio.wait_for(collect(ask(engine, STORY, adapter="diverged", temperature=temperature)), 120)
        rest, _ = await asyncio.wait_for(collect(running), 120)
        assert first.text + rest == alone
        assert engine.ready
    finally:
        await engine.unload_adapter("diverged")


async def test_a_pass_that_fails_for_one_row_fails_that_row_only(engine, monkeypatch):
    """The model raises whenever a given prompt is in the pass: its request fails, the batch it shared goes on."""
    poison = engine._tokenizer.encode("zebra crossing", add_special_tokens=False)
    scheduler = engine._scheduler
    owner, name = (scheduler.model, "forward_rows") if engine._decoder is not None else (scheduler, "_forward")
    real = getattr(owner, name)

    def picky(*args, **kw):
        ids = kw["input_ids"].tolist() if "input_ids" in kw else args[0]
        if any(poison[0] in row for row in ids):
            raise RuntimeError("this row breaks the kernel")
        return real(*args, **kw)

    alone, _ = await collect(ask(engine, STORY, temperature=0, max_tokens=16, ignore_eos=True))
    monkeypatch.setattr(owner, name, picky)
    running = ask(engine, STORY, temperature=0, max_tokens=16, ignore_eos=True)
    first = await anext(running)
    with pytest.raises(EngineUnavailable, match="breaks the kernel"):
        await asyncio.wait_for(collect(ask(engine, "zebra crossing", max_tokens=4)), 120)
    rest, _ = await asyncio.wait_for(collect(running), 120)
    assert first.text + rest == alone


async def test_torch_path_a_decode_pass_that_breaks_on_one_row_fails_that_row_only(engine, monkeypatch):
    """fp32 (padded batch): the pass fails whenever one row is in it; each row is run alone to find it."""
    if engine._decoder is not None:
        pytest.skip("the padded-batch scheduler only (the native rows: the test above)")
    scheduler = engine._scheduler
    real = scheduler._forward

    def picky(rows, **kw):
        if any(r.sampler.params.seed == 666 and r.sampler.output_ids for r in rows):  # after its first token
            raise RuntimeError("this row breaks the kernel")
        return real(rows, **kw)

    alone, _ = await collect(ask(engine, STORY, temperature=0, max_tokens=16, ignore_eos=True))
    monkeypatch.setattr(scheduler, "_forward", picky)
    running = ask(engine, STORY, temperature=0, max_tokens=16, ignore_eos=True)
    first = await anext(running)
    with pytest.raises(EngineUnavailable, match="breaks the kernel"):
        await asyncio.wait_for(collect(ask(engine, "Hi.", seed=666, max_tokens=8, ignore_eos=True)), 120)
    rest, _ = await asyncio.wait_for(collect(running), 120)
    assert first.text + rest == alone


async def test_a_full_waiting_line_refuses_at_once(engine, monkeypatch):
    monkeypatch.setattr(engine._scheduler, "_max_batch", 1)
    monkeypatch.setattr(engine._scheduler, "_max_waiting", 1)
    running = ask(engine, STORY, temperature=0, max_tokens=60, ignore_eos=True)
    await anext(running)  # it holds the only row
    waiting = asyncio.ensure_future(collect(ask(engine, STORY, temperature=0, max_tokens=2)))
    await _until(lambda: engine.stats()["queue_depth"] >= 1, "the second request queued")
    with pytest.raises(EngineOverloaded) as info:
        await collect(ask(engine, STORY, max_tokens=2))
    assert info.value.code == "engine_queue_full"
    await running.aclose()
    text, _ = await asyncio.wait_for(waiting, 120)
    assert text


async def test_a_text_too_long_for_any_tokenization_is_refused_before_tokenizing(engine, monkeypatch):
    def never(*args, **kw):
        raise AssertionError("tokenized a text that cannot fit")

    monkeypatch.setattr(engine._tokenizer, "encode", never)
    with pytest.raises(TooLarge) as info:
        await collect(engine.complete("x" * (engine.max_model_len * engine._token_chars + 1), _params()))
    assert info.value.param == "prompt"


async def test_tokenizing_a_long_prompt_leaves_the_event_loop_free(engine, monkeypatch):
    """Issue 29 M6: templating and tokenizing ran on the event loop and froze every client while they ran."""
    real = engine._tokenizer.encode
    started, release = threading.Event(), threading.Event()

    def slow(text, *args, **kw):
        if "MARKER" in text:
            started.set()
            release.wait(120)
        return real(text, *args, **kw)

    monkeypatch.setattr(engine._tokenizer, "encode", slow)
    long = asyncio.ensure_future(collect(ask(engine, "MARKER " + "word " * 300, temperature=0, max_tokens=2)))
    await _until(started.is_set, "the long prompt's tokenizing began")
    text, _ = await asyncio.wait_for(collect(ask(engine, STORY, temperature=0, max_tokens=2)), 120)
    assert text and not long.done()  # another request went all the way while the first was still tokenized
    release.set()
    _, chunks = await asyncio.wait_for(long, 120)
    assert chunks[-1].finish_reason is not None


def _params():
    from carafe.adapters.engine import SamplingParams

    return SamplingParams(max_tokens=2)


# ---- a stuck or dead worker -------------------------------------------------------
async def test_a_stuck_worker_makes_the_engine_not_ready_and_fails_its_requests(doomed, monkeypatch):
    scheduler = doomed._scheduler
    owner, name = (scheduler.model, "forward_rows") if doomed._decoder is not None else (scheduler, "_forward")
    real = getattr(owner, name)
    release = threading.Event()

    def stuck(*args, **kw):
        release.wait()
        return real(*args, **kw)

    monkeypatch.setattr(owner, name, stuck)
    with pytest.raises(EngineUnavailable, match="no progress"):
        await asyncio.wait_for(collect(ask(doomed, STORY, max_tokens=4)), 120)  # an error, never a hang
    assert not doomed.ready
    with pytest.raises(EngineUnavailable, match="no progress"):
        await collect(ask(doomed, STORY, max_tokens=4))  # refused at once while stuck
    monkeypatch.setattr(owner, name, real)
    release.set()
    await _until(lambda: doomed.ready, "ready again once the worker moves")
    text, _ = await asyncio.wait_for(collect(ask(doomed, STORY, temperature=0, max_tokens=4)), 120)
    assert text


async def test_a_dead_worker_makes_the_engine_not_ready_and_every_request_unavailable(doomed, monkeypatch):
    running = ask(doomed, STORY, temperature=0, max_tokens=200, ignore_eos=True)
    await anext(running)

    def boom() -> None:
        raise RuntimeError("worker loop bug")

    monkeypatch.setattr(doomed._scheduler, "_drop_done", boom)  # outside a step: escapes the worker loop
    with pytest.raises(EngineUnavailable, match="worker loop bug"):
        await asyncio.wait_for(collect(running), 120)
    await _until(lambda: not doomed.ready, "not ready after the worker died")
    with pytest.raises(EngineUnavailable, match="restart"):
        await asyncio.wait_for(collect(ask(doomed, STORY, max_tokens=4)), 120)
    await asyncio.wait_for(doomed.close(), 120)  # shutting down a dead engine returns


SHUTDOWN_SCRIPT = """
import asyncio, sys, threading
from carafe.adapters.config import EngineConfig
from carafe.adapters.engine import ChatMessage, SamplingParams
from carafe.adapters.local import LocalEngine

async def main():
    engine = LocalEngine(EngineConfig(device="cpu", quantize="int4", kernels="native", stall_timeout_s=1.0),
                         models_dir=sys.argv[1])
    await engine.start()
    engine._decoder.forward_rows = lambda *a, **k: threading.Event().wait()  # stuck for good
    stream = engine.chat([ChatMessage("user", "Hi.")], SamplingParams(max_tokens=4))
    try:
        async for _ in stream:
            pass
    except Exception as exc:
        print("request:", type(exc).__name__, flush=True)
    print("ready:", engine.ready, flush=True)
    await engine.close()
    print("closed", flush=True)

asyncio.run(main())
"""


def test_a_process_with_a_stuck_engine_still_shuts_down(base_model_dir):
    """No engine thread holds the process: the request fails, close returns and the interpreter exits."""
    import subprocess
    import sys

    from tests.conftest import MODELS_CACHE

    proc = subprocess.run(
        [sys.executable, "-c", SHUTDOWN_SCRIPT, str(MODELS_CACHE)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["request: EngineUnavailable", "ready: False", "closed"]
