"""The native engine's scheduler (:mod:`carafe.adapters.row_scheduler`): one pass per step in which
decoding streams bring a token and new requests the next piece of their prompt."""

from __future__ import annotations

import asyncio

import pytest

from carafe.adapters.local import LocalEngine
from tests.adapters.conftest import ask, running_engine

# ~210 prompt tokens: seven pieces of 32
LONG = "Passage: " + " ".join(f"Item {i} of the stock list is a box of {i * 7 % 13} blue pens." for i in range(20))


@pytest.fixture(scope="module")
def chunked(base_model_dir):
    yield from running_engine(quantize="int4", kernels="native", prefill_chunk=32)


async def test_a_decoding_stream_gets_a_token_in_every_pass_of_a_long_prompt(chunked):
    running = ask(chunked, "Tell me a long story.", temperature=0, max_tokens=300, ignore_eos=True)
    got = 0
    async for chunk in running:
        got = chunk.completion_tokens
        if got >= 3:
            break
    passes0 = chunked.stats()["prefill_chunks"]
    at_arrival = got
    late = ask(chunked, LONG, temperature=0, max_tokens=1)
    late_task = asyncio.ensure_future(anext(late))
    while not late_task.done():
        got = (await anext(running)).completion_tokens
    pieces = chunked.stats()["prefill_chunks"] - passes0
    assert pieces >= 6  # the prompt went in pieces of 32
    # every one of those passes carried the running stream's token too (give or take the arrival step)
    assert got - at_arrival >= pieces - 1
    await running.aclose()
    await late.aclose()


async def test_a_finished_or_abandoned_request_frees_its_kv(chunked):
    await _idle(chunked)
    assert chunked.stats()["kv_bytes"] == 0
    stream = ask(chunked, "Tell me a long story.", temperature=0, max_tokens=200, ignore_eos=True)
    await anext(stream)
    assert chunked.stats()["kv_bytes"] > 0
    await stream.aclose()  # abandoned: its row leaves at the next step
    await _idle(chunked)
    assert chunked.stats()["kv_bytes"] == 0
    async for _ in ask(chunked, "Hi.", temperature=0, max_tokens=3):  # finished
        pass
    await _idle(chunked)
    assert chunked.stats()["kv_bytes"] == 0


async def _idle(engine: LocalEngine) -> None:
    for _ in range(200):
        if engine.stats()["active_rows"] == 0:
            return
        await asyncio.sleep(0.05)
