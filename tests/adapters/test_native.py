"""Carafe's native kernels and forward pass (``adapters.engine.kernels: native``) on the real model.

What a user relies on: the kernels build on this machine (CI runs on the same kind of
x86-64 CPU, so a broken build fails here instead of silently serving the slower path);
the int4 x int8 products match fp32 arithmetic closely and compute every row alone; and
the forward pass gives a prompt the very same logits however it is cut into passes,
beside whichever other rows, with or without a prefix-cache snapshot, with each row's
own adapter. Exact equality (``torch.equal``) is asserted wherever the design promises it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest
import torch

from carafe.adapters import native
from carafe.adapters.errors import ModelNotAvailable
from carafe.adapters.kv_rows import RowKV

PROMPT = list(range(1000, 1077))  # 77 tokens: several blocks of 16 key columns and a partial one


def _vnni_cpu() -> bool:
    try:
        return "avx512_vnni" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def test_native_kernels_build_here():
    if platform.machine() != "x86_64":
        pytest.fail(f"the native kernels are x86-64 only; this is {platform.machine()}")
    assert native.load() is None
    # built for this CPU (the default): its AVX512-VNNI path wherever the CPU has it
    assert torch.ops.carafe.vnni() == (_vnni_cpu() and os.environ.get("CARAFE_NATIVE_MARCH", "native") == "native")


@pytest.fixture(scope="module")
def decoder(base_model_dir):
    from transformers import AutoConfig

    from carafe.adapters.decoder import LlamaDecoder
    from carafe.adapters.weights import TensorFiles

    d = LlamaDecoder(AutoConfig.from_pretrained(base_model_dir), TensorFiles(base_model_dir), "int4", "native")
    assert d.kernels == "native" and d.row_kv
    return d


def _run(decoder, pieces: list[list[int]], row: RowKV | None = None, adapter: str | None = None) -> torch.Tensor:
    """Feed one row its tokens in the given pieces; the logits of the last piece's last token."""
    row = row or decoder.new_row()
    out = None
    with torch.inference_mode():
        for piece in pieces:
            out = decoder.forward_rows([piece], [row], [adapter or "__base__"])
    return out[0]


# ---- kernels ---------------------------------------------------------------------
def test_q4_pack_keeps_gguf_q4_1_weights_exactly():
    # weights that are q * d + m with fp16 d and m (what a Q4_1 GGUF holds) come back bit for bit
    gen = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (64, 96), generator=gen).float()
    q[:, ::32] = 0  # every group holds its minimum and maximum, as GGUF's quantizer makes them
    q[:, 1::32] = 15
    d = (torch.rand(64, 3, generator=gen) * 0.01 + 1e-3).half().float().repeat_interleave(32, dim=1)
    m = (torch.randn(64, 3, generator=gen) * 0.05).half().float().repeat_interleave(32, dim=1)
    w = q * d + m
    assert torch.equal(torch.ops.carafe.q4_unpack(torch.ops.carafe.q4_pack(w)), w)


@pytest.mark.parametrize("kind", ["q4", "q8"])
def test_products_match_fp32_and_rows_never_mix(kind):
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(96, 576, generator=gen) * 0.05
    x = torch.randn(11, 576, generator=gen)
    if kind == "q4":
        packed = torch.ops.carafe.q4_pack(w)
        ref = x @ torch.ops.carafe.q4_unpack(packed).T

        def mul(a):
            return torch.ops.carafe.q4_linear(a, packed)
    else:
        packed, scales = torch.ops.carafe.q8_pack(w)
        ref = x @ w.T

        def mul(a):
            return torch.ops.carafe.q8_linear(a, packed, scales)

    y = mul(x)
    assert ((y - ref).abs().max() / ref.abs().max()).item() < 0.02  # int8 activations: ~0.5 % here
    for i in (0, 5, 10):  # a row alone, or among 2 or 11: the same bits
        assert torch.equal(mul(x[i : i + 1])[0], y[i])
        assert torch.equal(mul(x[i : i + 2] if i < 10 else x[9:11])[0 if i < 10 else 1], y[i])


def test_embedding_rows_come_from_the_packed_head():
    w = torch.randn(48, 64) * 0.1
    packed, scales = torch.ops.carafe.q8_pack(w)
    rows = torch.ops.carafe.q8_rows(packed, scales, torch.tensor([[0, 47], [17, 17]]))
    assert rows.shape == (2, 2, 64)
    assert (rows[0, 1] - w[47]).abs().max() <= scales[47] / 2 + 1e-7
    with pytest.raises(RuntimeError, match="out of range"):
        torch.ops.carafe.q8_rows(packed, scales, torch.tensor([48]))


# ---- the forward pass ----------------------------------------------------------------
def test_a_prompt_gives_the_same_logits_in_any_pieces(decoder):
    whole = _run(decoder, [PROMPT])
    assert torch.equal(_run(decoder, [PROMPT[:16], PROMPT[16:50], PROMPT[50:]]), whole)
    assert torch.equal(_run(decoder, [PROMPT[:-1], PROMPT[-1:]]), whole)  # the last token as a decode step
    assert torch.equal(_run(decoder, [[t] for t in PROMPT]), whole)  # token by token


def test_rows_in_one_pass_equal_lone_rows(decoder):
    other = list(range(2000, 2031))
    rows = [decoder.new_row(), decoder.new_row(), decoder.new_row()]
    with torch.inference_mode():
        both = decoder.forward_rows([PROMPT[:40], other, [5]], rows)
        again = decoder.forward_rows([PROMPT[40:], [7], [9]], rows)  # mixed: a chunk and two decode steps
    assert torch.equal(both[0], _run(decoder, [PROMPT[:40]]))
    assert torch.equal(both[1], _run(decoder, [other]))
    assert torch.equal(again[0], _run(decoder, [PROMPT]))
    assert torch.equal(again[1], _run(decoder, [other, [7]]))
    assert torch.equal(again[2], _run(decoder, [[5], [9]]))


def test_a_snapshot_resumes_a_prompt_exactly(decoder):
    row = decoder.new_row()
    _run(decoder, [PROMPT], row)
    for cut in (16, 37, 70):  # on and off key-block boundaries
        start = RowKV.from_snapshot(row.snapshot(len(PROMPT)), cut, len(PROMPT))
        assert start.length == cut
        assert torch.equal(_run(decoder, [PROMPT[cut:]], start), _run(decoder, [PROMPT]))


def test_a_row_grows_keeping_its_columns(decoder):
    row = decoder.new_row(0)
    small = row.capacity
    _run(decoder, [PROMPT[:40]], row)
    keys, values = row.keys(3).clone(), row.values(3).clone()
    _run(decoder, [PROMPT[40:] + list(range(small))], row)  # past the first capacity: the buffer grows
    assert row.capacity > small and row.length == len(PROMPT) + small
    assert torch.equal(row.keys(3)[:, :40], keys) and torch.equal(row.values(3)[:, :40], values)


def test_all_logits_gives_every_position(decoder):
    row = decoder.new_row()
    with torch.inference_mode():
        every = decoder.forward_rows([PROMPT[:20]], [row], all_logits=True)
    assert every.shape == (20, decoder.lm_head.out_features)
    assert torch.equal(every[-1], _run(decoder, [PROMPT[:20]]))
    assert torch.equal(every[9], _run(decoder, [PROMPT[:10]]))


@pytest.mark.parametrize("targets", [("q_proj", "v_proj"), ("k_proj", "o_proj", "gate_proj", "up_proj", "down_proj")])
def test_each_row_gets_its_own_adapter(decoder, make_lora, tmp_path, targets):
    from carafe.adapters.lora_set import read_lora

    decoder.add_adapter("one", read_lora(make_lora(tmp_path, seed=1, targets=targets)))
    decoder.add_adapter("two", read_lora(make_lora(tmp_path, seed=2, targets=targets)))
    try:
        base, one, two = (_run(decoder, [PROMPT], adapter=a) for a in (None, "one", "two"))
        assert not torch.equal(base, one) and not torch.equal(one, two)
        rows = [decoder.new_row() for _ in range(3)]
        with torch.inference_mode():
            mixed = decoder.forward_rows([PROMPT] * 3, rows, ["two", "__base__", "one"])
        assert torch.equal(mixed[0], two) and torch.equal(mixed[1], base) and torch.equal(mixed[2], one)
        # rows of one adapter take its weights together (a chunk and a decode step here): the same logits
        rows = [decoder.new_row() for _ in range(2)]
        with torch.inference_mode():
            decoder.forward_rows([PROMPT[:-1], PROMPT[:30]], rows, ["one", "one"])
            shared = decoder.forward_rows([PROMPT[-1:], PROMPT[30:]], rows, ["one", "one"])
        assert torch.equal(shared[0], one) and torch.equal(shared[1], one)
    finally:
        decoder.remove_adapter("one")
        decoder.remove_adapter("two")
    with pytest.raises(KeyError, match="not loaded"):
        _run(decoder, [PROMPT[:3]], adapter="one")


def test_a_rank_over_64_is_refused_with_the_reason(decoder, make_lora, tmp_path):
    from carafe.adapters.errors import InvalidAdapter
    from carafe.adapters.lora_set import read_lora

    with pytest.raises(InvalidAdapter, match="rank 80 is over 64.*kernels: torch"):
        decoder.add_adapter("big", read_lora(make_lora(tmp_path, rank=80)))
    assert "big" not in decoder.loras.adapters


def test_native_tracks_the_fp32_model(decoder, base_model_dir):
    """Greedy over the real chat template: the native pass picks fp32's token wherever fp32's best
    leads its second by more than a logit (int4 weights and int8 activations move near ties)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(base_model_dir)
    checked = 0
    questions = ["Name three colours.", "What is the capital of France?", "Summarise the water cycle."]
    for question in [*questions, "Write a short poem about rain.", "Why is the sky blue?"]:
        ids = tok.encode(
            tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
        )
        row, piece = decoder.new_row(), ids
        for _ in range(12):
            with torch.inference_mode():
                ours = decoder.forward_rows([piece], [row])[0]
                ref = model(torch.tensor([ids])).logits[0, -1]
            top2 = ref.topk(2).values
            if (top2[0] - top2[1]).item() > 1.0:
                assert int(ours.argmax()) == int(ref.argmax())
                checked += 1
            piece = [int(ref.argmax())]  # follow fp32's path
            ids = [*ids, piece[0]]
    assert checked >= 20  # of 60 steps; the rest are closer calls in fp32 itself


def test_kernels_native_is_refused_with_the_reason_when_they_cannot_build(monkeypatch, base_model_dir):
    from transformers import AutoConfig

    from carafe.adapters.decoder import LlamaDecoder
    from carafe.adapters.weights import TensorFiles

    monkeypatch.setattr(native, "load", lambda: "could not build the native kernels (g++: not found)")
    with pytest.raises(ModelNotAvailable, match="kernels is native, but could not build.*g\\+\\+"):
        LlamaDecoder(AutoConfig.from_pretrained(base_model_dir), TensorFiles(base_model_dir), "int4", "native")
    auto = LlamaDecoder(AutoConfig.from_pretrained(base_model_dir), TensorFiles(base_model_dir), "int4", "auto")
    assert auto.kernels == "torch" and not auto.row_kv
