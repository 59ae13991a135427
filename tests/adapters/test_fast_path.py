"""The fast path (``adapters.engine.quantize: int8``) on the real SmolLM2 model: the same
greedy text as the fp32 path, LoRA per row, chunked prefill and the prefix cache.

int8 weights and bf16 activations change the logits slightly (perplexity on the general
text +1.8 %), so a greedy answer leaves the fp32 one where two tokens are nearly tied
(bf16 alone does too; so do different prefill chunk sizes). So the decoder test
follows fp32's greedy answer token by token and requires the fast path's choice to be
fp32's wherever fp32's best token leads the next by more than ``TIE_MARGIN`` logits;
through the engine the first ``AGREE_TOKENS`` tokens must be equal. bench/peers.py
prints the first divergence on more prompts and the perplexity.
Within the decoder, a row of a batch mixing adapters gets exactly the logits of a lone
run on its adapter. Through the engine, rows join the running batch at steps that depend
on thread timing and are left-padded accordingly; attention over a longer padded row
sums in another order, so there a mixed row is compared with its lone run on the first
``BATCH_TOKENS`` tokens (a near-tie later on may flip).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from carafe.adapters.config import EngineConfig
from carafe.adapters.local import LocalEngine
from tests.adapters.conftest import ask, collect
from tests.conftest import MODELS_CACHE

AGREE_TOKENS, BATCH_TOKENS, TIE_MARGIN = 4, 12, 1.0
PROMPTS = ["Name three colours.", "What is the capital of France?", "Summarise the water cycle."]
# ~200 tokens, so a 32-token prefill chunk takes several passes
LONG = "Passage: " + " ".join(f"Item {i} of the stock list is a box of {i * 7 % 13} red pens." for i in range(20))


def _fast(**overrides) -> LocalEngine:
    config = EngineConfig(device="cpu", max_batch_size=8, max_model_len=512, quantize="int8", **overrides)
    return LocalEngine(config, models_dir=MODELS_CACHE)


@pytest.fixture(scope="module")
def fast(base_model_dir) -> Iterator[LocalEngine]:
    eng = _fast(prefill_chunk=32, prefix_cache_tokens=2048)
    asyncio.run(eng.start())
    try:
        yield eng
    finally:
        asyncio.run(eng.close())


async def _tokens(engine: LocalEngine, text: str, n: int, adapter: str | None = None) -> list[int]:
    _, chunks = await collect(ask(engine, text, adapter=adapter, temperature=0, max_tokens=n, ignore_eos=True))
    return [t for c in chunks for t in c.token_ids]


def test_fast_decoder_picks_fp32_greedy_tokens_except_near_ties(base_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from carafe.adapters.decoder import LlamaDecoder

    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    fast = LlamaDecoder(model, "int8")
    checked = 0
    with torch.inference_mode():
        for prompt in [*PROMPTS, "Write a short poem about rain.", "Why is the sky blue?"]:
            ids = tokenizer.encode(
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
                ),
                add_special_tokens=False,
            )
            answer = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)[0]
            mask = torch.ones(1, len(answer), dtype=torch.long)
            want = model(input_ids=answer[None], attention_mask=mask).logits[0, len(ids) - 1 : -1]
            got = fast(
                input_ids=answer[None], attention_mask=mask, position_ids=mask.cumsum(-1) - 1, cache=fast.new_cache()
            ).logits[0, len(ids) - 1 : -1]
            top2 = want.topk(2, dim=-1).values
            clear = (top2[:, 0] - top2[:, 1]) > TIE_MARGIN
            assert torch.equal(got.argmax(-1)[clear], want.argmax(-1)[clear]), prompt
            checked += int(clear.sum())
    assert checked > 40


async def test_fast_greedy_starts_like_fp32(engine, fast):
    for prompt in PROMPTS:
        assert await _tokens(fast, prompt, AGREE_TOKENS) == await _tokens(engine, prompt, AGREE_TOKENS), prompt


async def test_fast_path_keeps_the_base_digest(engine, fast):
    assert fast.model_digest == engine.model_digest
    assert fast.model_id == engine.model_id


async def test_adapters_change_output_and_mixed_batch_equals_single_runs(fast, make_lora, tmp_path):
    await fast.load_adapter("fast-a", str(make_lora(tmp_path, seed=1)))
    await fast.load_adapter("fast-b", str(make_lora(tmp_path, seed=2)))
    try:
        n, names = BATCH_TOKENS, [None, "fast-a", "fast-b"]
        base = await _tokens(fast, PROMPTS[0], n)
        alone = {a: await _tokens(fast, PROMPTS[0], n, a) for a in ("fast-a", "fast-b")}
        assert alone["fast-a"] != base and alone["fast-b"] != base and alone["fast-a"] != alone["fast-b"]

        async def batch(adapters: list[str | None]) -> list[list[int]]:
            return list(await asyncio.gather(*[_tokens(fast, PROMPTS[0], n, a) for a in adapters]))

        assert await batch(names) == [base, alone["fast-a"], alone["fast-b"]]
    finally:
        await fast.unload_adapter("fast-a")
        await fast.unload_adapter("fast-b")


def test_decoder_mixed_adapter_rows_equal_lone_runs(base_model_dir, make_lora, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from carafe.adapters.decoder import LlamaDecoder
    from carafe.adapters.lora_set import BASE, read_lora

    decoder = LlamaDecoder(AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32), "int8")
    for seed in (1, 2):
        decoder.loras.add(f"s{seed}", read_lora(make_lora(tmp_path, seed=seed)))
    ids = torch.arange(100, 120)[None]
    mask = torch.ones_like(ids)
    names = [BASE, "s1", "s2"]

    def run(rows: list[str]) -> torch.Tensor:
        n = len(rows)
        with torch.inference_mode():
            return decoder(
                input_ids=ids.repeat(n, 1),
                attention_mask=mask.repeat(n, 1),
                position_ids=(mask.cumsum(-1) - 1).repeat(n, 1),
                cache=decoder.new_cache(),
                adapter_names=rows,
            ).logits

    mixed, lone = run(names), [run([n])[0] for n in names]
    assert all(torch.equal(mixed[i], lone[i]) for i in range(3))
    assert not torch.equal(lone[0], lone[1]) and not torch.equal(lone[1], lone[2])


async def test_chunked_prefill_gives_one_shot_tokens(fast):
    one_shot = _fast(prefill_chunk=0)
    await one_shot.start()
    try:
        chunks0 = fast.stats()["prefill_chunks"]
        assert await _tokens(fast, LONG, 8) == await _tokens(one_shot, LONG, 8)
        assert fast.stats()["prefill_chunks"] - chunks0 > 3  # the prompt went in several pieces
    finally:
        await one_shot.close()


async def test_prefix_cache_hit_gives_the_miss_output(fast):
    other = LONG + " Question: which item has 5 pens?"
    miss = await _tokens(fast, other, 8)  # stored now
    hits0 = fast.stats()["prefix_hits"]
    first = await _tokens(fast, LONG + " Question: which item has 3 pens?", 8)  # shares the passage
    assert fast.stats()["prefix_hits"] == hits0 + 1
    again = await _tokens(fast, other, 8)  # shares everything but the last token
    assert again == miss
    cold = _fast(prefix_cache_tokens=0, prefill_chunk=32)
    await cold.start()
    try:
        assert await _tokens(cold, LONG + " Question: which item has 3 pens?", 8) == first
    finally:
        await cold.close()
