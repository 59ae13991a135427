"""LocalEngine on the real SmolLM2 model: decoding, sampling, batching, LoRA per row; every test
on the fp32 transformers + PEFT engine and on the int4 native engine (its own scheduler)."""

from __future__ import annotations

import asyncio
import json

import pytest

from carafe.adapters.engine import ChatMessage, SamplingParams
from carafe.adapters.errors import AdapterConflict, AdapterNotFound, InvalidAdapter
from carafe.errors import TooLarge
from tests.adapters.conftest import ask, collect

QUESTION = "Name three colours."


@pytest.fixture(params=["fp32", "int4-native"])
def engine(request, engine, native_engine):
    return engine if request.param == "fp32" else native_engine


async def test_greedy_is_deterministic(engine):
    a, _ = await collect(ask(engine, QUESTION, temperature=0, max_tokens=6))
    b, _ = await collect(ask(engine, QUESTION, temperature=0, max_tokens=6))
    assert a and a == b


async def test_seed_gives_same_tokens_alone_and_in_a_batch(engine):
    params = dict(temperature=1.0, seed=1234, max_tokens=6, ignore_eos=True)
    alone, _ = await collect(ask(engine, QUESTION, **params))
    together = await asyncio.gather(
        collect(ask(engine, "Write a poem about the sea.", temperature=1.0, seed=9, max_tokens=8)),
        collect(ask(engine, QUESTION, **params)),
        collect(ask(engine, "Hello!", temperature=0.8, top_p=0.9, top_k=40, max_tokens=4)),
    )
    assert together[1][0] == alone
    other, _ = await collect(ask(engine, QUESTION, **{**params, "seed": 99}))
    assert other != alone


async def test_stop_string_is_never_emitted(engine):
    full, _ = await collect(ask(engine, QUESTION, temperature=0, max_tokens=12))
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    text, chunks = await collect(ask(engine, QUESTION, temperature=0, max_tokens=12, stop=[stop]))
    assert text == full[: full.index(stop)]
    assert chunks[-1].finish_reason == "stop"
    assert all(stop not in c.text for c in chunks)


async def test_max_tokens_ends_with_length(engine):
    _, chunks = await collect(ask(engine, QUESTION, temperature=0, max_tokens=3, ignore_eos=True))
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].completion_tokens == 3


async def test_eos_ends_with_stop_and_min_tokens_delays_it(engine):
    _, chunks = await collect(ask(engine, "Say OK.", temperature=0, max_tokens=40))
    assert chunks[-1].finish_reason == "stop"
    natural = chunks[-1].completion_tokens
    _, longer = await collect(ask(engine, "Say OK.", temperature=0, max_tokens=natural + 6, min_tokens=natural + 2))
    assert longer[-1].completion_tokens >= natural + 2


async def test_usage_counts_are_the_tokenizers(engine):
    messages = [ChatMessage("user", QUESTION)]
    text, chunks = await collect(engine.chat(messages, SamplingParams(temperature=0, max_tokens=8)))
    final = chunks[-1]
    assert final.prompt_tokens == engine.count_tokens(engine.chat_prompt(messages))
    ids = [t for c in chunks for t in c.token_ids]
    assert final.completion_tokens == len(ids)
    # streamed pieces add up to the one-shot decode of the same tokens
    assert text == engine._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


async def test_complete_continues_raw_text(engine):
    text, chunks = await collect(
        engine.complete("The capital of France is", SamplingParams(temperature=0, max_tokens=4))
    )
    assert "Paris" in text
    assert chunks[-1].prompt_tokens == engine.count_tokens("The capital of France is")


async def test_concurrent_requests_share_forward_passes(engine):
    before = engine.stats()
    results = await asyncio.gather(
        *[collect(ask(engine, f"Count to {i}.", temperature=0, max_tokens=4, ignore_eos=True)) for i in range(4)]
    )
    after = engine.stats()
    tokens = after["tokens_generated"] - before["tokens_generated"]
    forwards = (after["steps"] - before["steps"]) + (after["prefills"] - before["prefills"])
    assert tokens == sum(r[1][-1].completion_tokens for r in results) == 16
    assert forwards < tokens


async def test_closing_the_stream_frees_the_slot(engine):
    stream = ask(engine, "Tell me a long story.", temperature=0, max_tokens=200, ignore_eos=True)
    first = await anext(stream)
    assert first.finish_reason is None
    before = engine.stats()["requests_cancelled"]
    await stream.aclose()
    for _ in range(200):
        if engine.stats()["active_rows"] == 0:
            break
        await asyncio.sleep(0.05)
    stats = engine.stats()
    assert stats["active_rows"] == 0
    assert stats["requests_cancelled"] == before + 1


async def test_too_long_prompt_is_refused_with_counts(engine):
    with pytest.raises(TooLarge, match="max_tokens is 100"):
        await collect(engine.complete("word " * 450, SamplingParams(max_tokens=100)))


async def test_unknown_adapter_is_not_found(engine):
    with pytest.raises(AdapterNotFound):
        await collect(ask(engine, QUESTION, adapter="nope", max_tokens=2))


async def test_a_failed_prefill_fails_its_requests_and_the_engine_goes_on(engine, monkeypatch):
    from carafe.adapters.errors import EngineUnavailable

    scheduler = engine._scheduler
    # the model call each scheduler makes: the native pass, or the classic scheduler's forward
    owner, name = (scheduler.model, "forward_rows") if engine._decoder is not None else (scheduler, "_forward")
    real = getattr(owner, name)
    calls = {"n": 0}

    def broken_once(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("kernel exploded")
        return real(*args, **kw)

    monkeypatch.setattr(owner, name, broken_once)
    with pytest.raises(EngineUnavailable, match="kernel exploded"):
        await asyncio.wait_for(collect(ask(engine, QUESTION, max_tokens=2)), 30)  # an error, never a hang
    text, _ = await asyncio.wait_for(collect(ask(engine, QUESTION, max_tokens=2, temperature=0)), 30)
    assert text


# ---- LoRA adapters ------------------------------------------------------------
async def test_adapter_changes_output_and_mixed_batch_matches_single_runs(engine, make_lora, tmp_path):
    greedy = dict(temperature=0, max_tokens=6, ignore_eos=True)
    plain_base = (await collect(ask(engine, QUESTION, **greedy)))[0]  # no adapter loaded yet
    await engine.load_adapter("style-a", str(make_lora(tmp_path, seed=1)))
    await engine.load_adapter("style-b", str(make_lora(tmp_path, rank=4, seed=2)))
    try:
        singles = [(await collect(ask(engine, QUESTION, adapter=a, **greedy)))[0] for a in (None, "style-a", "style-b")]
        assert singles[0] == plain_base  # loaded adapters leave base-model requests untouched
        assert singles[1] != singles[0] and singles[2] != singles[0]
        mixed = await asyncio.gather(
            *[collect(ask(engine, QUESTION, adapter=a, **greedy)) for a in (None, "style-a", "style-b")]
        )
        assert [m[0] for m in mixed] == singles
        assert {a.name for a in engine.adapters()} >= {"style-a", "style-b"}
    finally:
        await engine.unload_adapter("style-a")
        await engine.unload_adapter("style-b")
    assert engine.adapters() == []


async def test_load_is_idempotent_and_a_new_path_conflicts(engine, make_lora, tmp_path):
    path = make_lora(tmp_path, seed=3)
    first = await engine.load_adapter("same", str(path))
    try:
        assert await engine.load_adapter("same", str(path)) == first
        with pytest.raises(AdapterConflict):
            await engine.load_adapter("same", str(make_lora(tmp_path, seed=4)))
    finally:
        await engine.unload_adapter("same")
    with pytest.raises(AdapterNotFound):
        await engine.unload_adapter("same")


async def test_unload_lets_a_running_request_finish(engine, make_lora, tmp_path):
    await engine.load_adapter("leaving", str(make_lora(tmp_path, seed=5)))
    stream = ask(engine, QUESTION, adapter="leaving", temperature=0, max_tokens=6, ignore_eos=True)
    first = await anext(stream)
    unload = asyncio.create_task(engine.unload_adapter("leaving"))
    await asyncio.sleep(0)
    with pytest.raises(AdapterNotFound):  # new requests are refused at once
        await collect(ask(engine, QUESTION, adapter="leaving", max_tokens=2))
    rest = [c async for c in stream]
    assert rest[-1].finish_reason == "length" and rest[-1].completion_tokens == 6
    await unload
    assert all(a.name != "leaving" for a in engine.adapters())
    assert first.text is not None


async def test_bad_adapter_folders_are_refused(engine, make_lora, tmp_path):
    with pytest.raises(InvalidAdapter, match="adapter_config.json"):
        await engine.load_adapter("empty", str(tmp_path))
    good = make_lora(tmp_path, seed=6)
    cfg = json.loads((good / "adapter_config.json").read_text())
    not_lora = tmp_path / "ia3"
    not_lora.mkdir()
    (not_lora / "adapter_config.json").write_text(json.dumps({**cfg, "peft_type": "IA3"}))
    (not_lora / "adapter_model.safetensors").write_bytes((good / "adapter_model.safetensors").read_bytes())
    with pytest.raises(InvalidAdapter, match="not a LoRA"):
        await engine.load_adapter("ia3", str(not_lora))
    big = make_lora(tmp_path, rank=96, seed=7)
    with pytest.raises(InvalidAdapter, match="rank 96"):
        await engine.load_adapter("big", str(big))
    assert engine.adapters() == []


async def test_adapter_for_another_model_is_refused(engine, tmp_path):
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]})
    )
    name = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file(
        {f"{name}.lora_A.weight": torch.zeros(4, 1024), f"{name}.lora_B.weight": torch.zeros(1024, 4)},
        str(folder / "adapter_model.safetensors"),
    )
    with pytest.raises(InvalidAdapter, match="another model"):
        await engine.load_adapter("other", str(folder))
