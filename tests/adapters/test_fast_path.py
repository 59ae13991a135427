"""The fast path (``adapters.engine.quantize: int4`` and ``int8``) on the real SmolLM2 model:
the same greedy text as the fp32 path, LoRA per row, chunked prefill and the prefix cache.
Through the engine every test runs on both int4 kernels: Carafe's native pass
(``kernels: native``, one KV per row, :mod:`tests.adapters.test_native` tests it alone)
and torch's int4 kernel from the Python decoder (``kernels: torch``).

int4 keeps the GGUF's own Q4_1 weights, but bf16 activations (and int8's requantised
weights, perplexity on the general text +1.4 %) change the logits slightly, so a greedy
answer leaves the fp32 one where two tokens are nearly tied
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


def _fast(kernels: str, **overrides) -> LocalEngine:
    config = EngineConfig(
        device="cpu", max_batch_size=8, max_model_len=512, quantize="int4", kernels=kernels, **overrides
    )
    return LocalEngine(config, models_dir=MODELS_CACHE)


@pytest.fixture(scope="module", params=["native", "torch"])
def fast(request, base_model_dir) -> Iterator[LocalEngine]:
    eng = _fast(request.param, prefill_chunk=32, prefix_cache_tokens=2048)
    asyncio.run(eng.start())
    try:
        yield eng
    finally:
        asyncio.run(eng.close())


async def _tokens(engine: LocalEngine, text: str, n: int, adapter: str | None = None) -> list[int]:
    _, chunks = await collect(ask(engine, text, adapter=adapter, temperature=0, max_tokens=n, ignore_eos=True))
    return [t for c in chunks for t in c.token_ids]


@pytest.fixture(scope="module")
def fp32_model(base_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32).eval()


@pytest.mark.parametrize("mode", ["int4", "int8"])
def test_fast_decoder_picks_fp32_greedy_tokens_except_near_ties(base_model_dir, fp32_model, mode):
    """The Python decoder (torch's kernels); test_native holds the native pass to the same standard."""
    import torch
    from transformers import AutoTokenizer

    from carafe.adapters.decoder import LlamaDecoder

    model = fp32_model
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    fast = LlamaDecoder.from_model(model, mode, "torch")
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
            # the prompt in one prefill, then the answer one decode step at a time (the serving path)
            cache, n = fast.new_cache(), len(ids)
            steps = [
                fast(
                    input_ids=answer[None, :n],
                    attention_mask=mask[:, :n],
                    position_ids=mask[:, :n].cumsum(-1) - 1,
                    cache=cache,
                ).logits[0, -1]
            ]
            for i in range(n, len(answer) - 1):
                step = fast(
                    input_ids=answer[None, i : i + 1],
                    attention_mask=mask[:, : i + 1],
                    position_ids=torch.tensor([[i]]),
                    cache=cache,
                )
                steps.append(step.logits[0, -1])
            got = torch.stack(steps)
            top2 = want.topk(2, dim=-1).values
            clear = (top2[:, 0] - top2[:, 1]) > TIE_MARGIN
            assert torch.equal(got.argmax(-1)[clear], want.argmax(-1)[clear]), prompt
            checked += int(clear.sum())
    assert checked > 40


async def test_fast_greedy_follows_fp32_through_the_engine_except_near_ties(engine, fast, fp32_model, base_model_dir):
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    same = 0
    for prompt in [*PROMPTS, "Write a short poem about rain.", "Why is the sky blue?"]:
        want, got = await _tokens(engine, prompt, AGREE_TOKENS), await _tokens(fast, prompt, AGREE_TOKENS)
        if got == want:
            same += 1
            continue
        # where they part, fp32's own choice must have been a near tie
        first = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
        chat = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer.encode(chat, add_special_tokens=False) + want[:first]
        with torch.inference_mode():
            top2 = fp32_model(input_ids=torch.tensor([ids])).logits[0, -1].topk(2).values
        assert float(top2[0] - top2[1]) < TIE_MARGIN, (prompt, first)
    assert same >= 2


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


@pytest.mark.parametrize("kernels", ["native", "torch"])
def test_decoder_from_files_equals_decoder_from_model(base_model_dir, fp32_model, kernels):
    """The engine reads and packs the weights one tensor at a time (the output head slice by slice);
    the result is the same model."""
    import torch
    from transformers import AutoConfig

    from carafe.adapters.decoder import LlamaDecoder
    from carafe.adapters.weights import TensorFiles

    files = TensorFiles(base_model_dir)
    state = fp32_model.state_dict()
    assert torch.equal(files["model.layers.3.mlp.down_proj.weight"], state["model.layers.3.mlp.down_proj.weight"])
    ids = torch.arange(100, 110)[None]
    mask = torch.ones_like(ids)
    logits = []
    decoders = (
        LlamaDecoder(AutoConfig.from_pretrained(base_model_dir), files, "int4", kernels),
        LlamaDecoder.from_model(fp32_model, "int4", kernels),
    )
    for decoder in decoders:
        assert decoder.kernels == kernels
        with torch.inference_mode():
            if decoder.row_kv:  # the serving path of the native kernels
                logits.append(decoder.forward_rows([ids[0].tolist()], [decoder.new_row()]))
            else:
                logits.append(
                    decoder(
                        input_ids=ids, attention_mask=mask, position_ids=mask.cumsum(-1) - 1, cache=decoder.new_cache()
                    ).logits
                )
    assert torch.equal(logits[0], logits[1])
    assert torch.equal(decoders[0].lm_head.weight, decoders[1].lm_head.weight)
    shapes = decoder.linear_shapes()
    modules = {
        n: (m.in_features, m.out_features) for n, m in fp32_model.named_modules() if isinstance(m, torch.nn.Linear)
    }
    assert shapes == modules


@pytest.mark.parametrize("mode", ["int4", "int8"])
def test_decoder_mixed_adapter_rows_equal_lone_runs(fp32_model, make_lora, tmp_path, mode):
    import torch

    from carafe.adapters.decoder import LlamaDecoder
    from carafe.adapters.lora_set import BASE, read_lora

    decoder = LlamaDecoder.from_model(fp32_model, mode, "torch")
    for seed in (1, 2):
        decoder.add_adapter(f"s{seed}", read_lora(make_lora(tmp_path, seed=seed)))
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

    def step(rows: list[str]) -> torch.Tensor:  # a prefill, then one decode step (the packed kernels)
        n, cache = len(rows), decoder.new_cache()
        with torch.inference_mode():
            decoder(
                input_ids=ids.repeat(n, 1),
                attention_mask=mask.repeat(n, 1),
                position_ids=(mask.cumsum(-1) - 1).repeat(n, 1),
                cache=cache,
                adapter_names=rows,
            )
            one = torch.ones(n, ids.shape[1] + 1, dtype=torch.long)
            return decoder(
                input_ids=torch.full((n, 1), 7),
                attention_mask=one,
                position_ids=torch.full((n, 1), ids.shape[1]),
                cache=cache,
                adapter_names=rows,
            ).logits

    mixed, lone = step(names), [step([n])[0] for n in names]
    assert all(torch.equal(mixed[i], lone[i]) for i in range(3))
    assert not torch.allclose(lone[0], lone[1], atol=1e-2) and not torch.allclose(lone[1], lone[2], atol=1e-2)


async def test_chunked_prefill_gives_one_shot_tokens(fast):
    one_shot = _fast(fast.config.kernels, prefill_chunk=0)
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
    cold = _fast(fast.config.kernels, prefix_cache_tokens=0, prefill_chunk=32)
    await cold.start()
    try:
        assert await _tokens(cold, LONG + " Question: which item has 3 pens?", 8) == first
    finally:
        await cold.close()


async def test_prefix_hit_ending_mid_chunk_on_the_chat_template_gives_the_miss_output(fast):
    # two short chats share only the template's system turn (~27 tokens, not a chunk multiple)
    await _tokens(fast, "Explain how a bicycle works.", 2)
    hits0, reused0 = fast.stats()["prefix_hits"], fast.stats()["prefix_tokens_reused"]
    warm = await _tokens(fast, "Describe a busy market.", 12)
    reused = fast.stats()["prefix_tokens_reused"] - reused0
    assert fast.stats()["prefix_hits"] == hits0 + 1 and reused % 32 != 0
    cold = _fast(fast.config.kernels, prefix_cache_tokens=0, prefill_chunk=32)
    await cold.start()
    try:
        assert await _tokens(cold, "Describe a busy market.", 12) == warm
    finally:
        await cold.close()


async def test_native_rows_sharing_a_prefix_prefill_in_one_pass_and_keep_their_tokens(base_model_dir):
    """Native rows are independent: requests that start the same way each start from the stored
    prefix and take in the rest of their prompts in the same pass, with the tokens they get alone."""
    questions = ["Why is the sky blue?", "List some uses of copper.", "What do bees do in winter?"]
    warm, cold = _fast("native", prefill_chunk=32, prefix_cache_tokens=2048), _fast("native", prefix_cache_tokens=0)
    await warm.start()
    await cold.start()
    try:
        await _tokens(warm, "Give tips for learning to cook.", 2)  # stores the template's system turn
        before = dict(warm.stats())
        together = await asyncio.gather(*[_tokens(warm, q, BATCH_TOKENS) for q in questions])
        stats = warm.stats()
        assert stats["prefix_hits"] - before["prefix_hits"] == 3
        assert stats["prefill_chunks"] - before["prefill_chunks"] < 3  # at least two of them in one pass
        assert list(together) == [await _tokens(cold, q, BATCH_TOKENS) for q in questions]
    finally:
        await warm.close()
        await cold.close()
