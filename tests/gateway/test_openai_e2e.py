"""End to end: the official openai SDK against a real uvicorn server and the real model."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import openai
import pytest

from tests.gateway.conftest import BASE_MODEL, Gateway

HELLO = [{"role": "user", "content": "Say hello to the new HR colleague in one sentence."}]


@pytest.fixture(scope="module", params=["fp32", "int4-native"])
def gateway(request, gateway, native_gateway):
    """Every test here against the fp32 engine and the int4 native engine behind the same gateway."""
    return gateway if request.param == "fp32" else native_gateway


def test_chat_non_streaming_real_generation(gateway: Gateway) -> None:
    resp = gateway.client().chat.completions.create(model=BASE_MODEL, messages=HELLO, max_tokens=24, temperature=0)
    choice = resp.choices[0]
    assert resp.object == "chat.completion"
    assert resp.model == BASE_MODEL
    assert choice.message.role == "assistant"
    assert choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    # usage is counted with the real tokenizer
    engine = gateway.state.engine
    prompt = engine.chat_prompt(
        [__import__("carafe.adapters.engine", fromlist=["ChatMessage"]).ChatMessage(**HELLO[0])]
    )
    assert resp.usage.prompt_tokens == engine.count_tokens(prompt)
    assert 0 < resp.usage.completion_tokens <= 24
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_finish_reason_length_counts_exactly_max_tokens(gateway: Gateway) -> None:
    resp = gateway.client().chat.completions.create(
        model=BASE_MODEL,
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_tokens=5,
        temperature=0,
    )
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 5


def test_streaming_matches_non_streaming_and_reports_usage(gateway: Gateway) -> None:
    client = gateway.client()
    full = client.chat.completions.create(model=BASE_MODEL, messages=HELLO, max_tokens=20, temperature=0)
    stream = client.chat.completions.create(
        model=BASE_MODEL,
        messages=HELLO,
        max_tokens=20,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == full.choices[0].message.content
    assert finals == [full.choices[0].finish_reason]
    # the usage chunk comes last, with no choices, and matches the non-streamed count
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_wire_format_ends_with_done(gateway: Gateway) -> None:
    body = {"model": BASE_MODEL, "messages": HELLO, "max_tokens": 4, "stream": True}
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {gateway.user_key}"},
        timeout=120,
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert '"object":"chat.completion.chunk"' in events[0]


def test_seed_gives_same_output_and_temperature_zero_is_deterministic(gateway: Gateway) -> None:
    client = gateway.client()
    kw = dict(model=BASE_MODEL, messages=[{"role": "user", "content": "Name three fruits."}], max_tokens=16)
    a = client.chat.completions.create(**kw, temperature=1.0, seed=1234).choices[0].message.content
    b = client.chat.completions.create(**kw, temperature=1.0, seed=1234).choices[0].message.content
    assert a == b
    g1 = client.chat.completions.create(**kw, temperature=0).choices[0].message.content
    g2 = client.chat.completions.create(**kw, temperature=0).choices[0].message.content
    assert g1 == g2


def test_different_seeds_differ_for_high_temperature(gateway: Gateway) -> None:
    client = gateway.client()
    kw = dict(
        model=BASE_MODEL,
        messages=[{"role": "user", "content": "Invent a name for a cat."}],
        max_tokens=12,
        temperature=1.5,
    )
    outs = {client.chat.completions.create(**kw, seed=s).choices[0].message.content for s in range(4)}
    assert len(outs) > 1


def test_stop_sequence_is_honoured_and_excluded(gateway: Gateway) -> None:
    client = gateway.client()
    kw = dict(
        model=BASE_MODEL,
        messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
        max_tokens=40,
        temperature=0,
    )
    free = client.chat.completions.create(**kw).choices[0].message.content
    assert "," in free, free
    stopped = client.chat.completions.create(**kw, stop=[","])
    assert "," not in stopped.choices[0].message.content
    assert stopped.choices[0].finish_reason == "stop"
    assert free.startswith(stopped.choices[0].message.content)


def test_n_choices(gateway: Gateway) -> None:
    resp = gateway.client().chat.completions.create(
        model=BASE_MODEL,
        messages=HELLO,
        max_tokens=8,
        temperature=1.0,
        seed=7,
        n=3,
    )
    assert [c.index for c in resp.choices] == [0, 1, 2]
    assert all(c.message.content for c in resp.choices)
    assert resp.usage.completion_tokens == sum(1 for _ in resp.choices) * 8 or resp.usage.completion_tokens <= 24


def test_streaming_n_choices_have_their_indices(gateway: Gateway) -> None:
    stream = gateway.client().chat.completions.create(
        model=BASE_MODEL,
        messages=HELLO,
        max_tokens=6,
        temperature=0.8,
        seed=3,
        n=2,
        stream=True,
    )
    finished = {c.choices[0].index for c in stream if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1}


def test_completions_endpoint(gateway: Gateway) -> None:
    client = gateway.client()
    resp = client.completions.create(model=BASE_MODEL, prompt="The capital of France is", max_tokens=6, temperature=0)
    assert resp.object == "text_completion"
    assert resp.choices[0].text
    assert resp.usage.completion_tokens <= 6
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=BASE_MODEL, prompt="The capital of France is", max_tokens=6, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == resp.choices[0].text
    echoed = client.completions.create(model=BASE_MODEL, prompt="Hi", max_tokens=2, temperature=0, echo=True)
    assert echoed.choices[0].text.startswith("Hi")


def test_models_list_shows_base_and_adapters_with_parent(gateway: Gateway, tmp_path) -> None:
    from tests.lora import make_lora

    ids = [m.id for m in gateway.client().models.list().data]
    assert BASE_MODEL in ids
    path = make_lora(tmp_path / "style", seed=1)
    r = httpx.post(
        f"{gateway.url}/v1/load_lora_adapter",
        json={"lora_name": "e2e-style", "lora_path": str(path)},
        headers={"Authorization": f"Bearer {gateway.admin_key}"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    cards = {m.id: m for m in gateway.client().models.list().data}
    assert "e2e-style" in cards
    assert cards["e2e-style"].model_extra["parent"] == BASE_MODEL
    base = gateway.client().chat.completions.create(model=BASE_MODEL, messages=HELLO, max_tokens=8, temperature=0)
    out = gateway.client().chat.completions.create(model="e2e-style", messages=HELLO, max_tokens=8, temperature=0)
    assert out.model.startswith("e2e-style")
    assert out.choices[0].message.content != base.choices[0].message.content


def test_embeddings_with_minilm(gateway: Gateway) -> None:
    client = gateway.client()
    resp = client.embeddings.create(
        model="all-MiniLM-L6-v2",
        input=["How many vacation days do I get?", "What is the annual leave allowance?", "GPU kernel tuning"],
    )
    vecs = np.array([d.embedding for d in resp.data])
    assert vecs.shape == (3, 384)
    assert resp.model == "all-MiniLM-L6-v2"  # the model's own vectors, even where retrieval uses int8
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2]
    assert resp.usage.prompt_tokens > 0
    import base64

    b64 = client.embeddings.create(
        model="all-MiniLM-L6-v2", input=["How many vacation days do I get?"], encoding_format="base64"
    )
    decoded = np.frombuffer(base64.b64decode(b64.data[0].embedding), dtype="<f4")
    assert np.allclose(decoded, vecs[0], atol=1e-5)


def test_overhead_header_on_every_response(gateway: Gateway) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(model=BASE_MODEL, messages=HELLO, max_tokens=2)
    assert float(raw.headers["x-carafe-overhead-duration-ms"]) >= 0
    assert raw.headers["x-carafe-adapter"] == BASE_MODEL
    for r in (
        httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {gateway.user_key}"}),
        httpx.get(f"{gateway.url}/v1/models"),  # an error response too
        httpx.get(f"{gateway.url}/healthz"),
    ):
        assert float(r.headers["x-carafe-overhead-duration-ms"]) >= 0


def test_concurrent_async_clients(gateway: Gateway) -> None:
    async def run() -> list[str]:
        client = gateway.async_client()
        outs = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model=BASE_MODEL, messages=[{"role": "user", "content": f"Say {i}"}], max_tokens=6, temperature=0
                )
                for i in range(6)
            )
        )
        return [o.choices[0].message.content for o in outs]

    outs = asyncio.run(run())
    assert len(outs) == 6 and all(outs)


def test_health_and_readiness(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_unknown_model_is_404_not_found(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        gateway.client().chat.completions.create(model="no-such-model", messages=HELLO)
    assert exc.value.body["code"] == "model_not_found"
    assert exc.value.body["param"] == "model"


def test_client_disconnect_mid_stream_frees_the_slot(gateway: Gateway) -> None:
    import time

    engine = gateway.state.engine
    before = engine.stats()["requests_cancelled"]
    body = {
        "model": BASE_MODEL,
        "messages": [{"role": "user", "content": "Tell a very long story."}],
        "max_tokens": 2000,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {gateway.user_key}"},
        timeout=120,
    ) as r:
        for n, _ in enumerate(r.iter_lines()):
            if n >= 3:
                break  # hang up after a few tokens
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = engine.stats()
        if stats["active_rows"] == 0 and stats["requests_cancelled"] > before:
            break
        time.sleep(0.1)
    stats = engine.stats()
    assert stats["requests_cancelled"] > before, stats
    assert stats["active_rows"] == 0, stats
