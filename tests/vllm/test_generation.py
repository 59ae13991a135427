"""The OpenAI API of a Carafe gateway in front of a real vLLM: chat and completions,
streamed and not, usage, stop, seed, and /v1/models with adapters as children of
the base model. Tiny max_tokens: vLLM on two shared cores is slow."""

from __future__ import annotations

import pytest

from tests.vllm.conftest import Gateway, vllm_models
from tests.vllm.launch import SERVED_NAME

COUNT = "1, 2, 3, 4,"

pytestmark = pytest.mark.vllm


def test_chat_plain_and_streamed_report_usage(gateway: Gateway) -> None:
    client = gateway.openai()
    msg = [{"role": "user", "content": "Say hello."}]
    raw = client.chat.completions.with_raw_response.create(model=SERVED_NAME, messages=msg, max_tokens=4, temperature=0)
    plain = raw.parse()
    assert raw.headers["x-carafe-adapter"] == SERVED_NAME
    assert plain.choices[0].message.content and plain.choices[0].finish_reason == "length"
    assert plain.usage.completion_tokens == 4 and plain.usage.prompt_tokens > 5  # vLLM's chat template counted
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + 4
    chunks = list(
        client.chat.completions.create(
            model=SERVED_NAME,
            messages=msg,
            max_tokens=4,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content  # greedy: the same answer either way
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage.completion_tokens == 4 and chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens


def test_completions_stop_and_seed(gateway: Gateway) -> None:
    client = gateway.openai()
    full = client.completions.create(model=SERVED_NAME, prompt=COUNT, max_tokens=8, temperature=0)
    assert full.choices[0].text.startswith(" 5, 6,") and full.usage.prompt_tokens == 11
    stopped = client.completions.create(model=SERVED_NAME, prompt=COUNT, max_tokens=8, temperature=0, stop=[" 7"])
    assert stopped.choices[0].text == " 5, 6," and stopped.choices[0].finish_reason == "stop"
    streamed = list(
        client.completions.create(
            model=SERVED_NAME, prompt=COUNT, max_tokens=8, temperature=0, stop=[" 7"], stream=True
        )
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == " 5, 6,"
    sampled = [
        client.completions.create(
            model=SERVED_NAME, prompt="Once upon a time", max_tokens=6, temperature=1.0, seed=seed
        )
        .choices[0]
        .text
        for seed in (7, 7, 8)
    ]
    assert sampled[0] == sampled[1]  # the seed reaches vLLM
    assert sampled[0] != sampled[2]


def test_models_lists_adapters_as_children_of_the_base(gateway: Gateway, vllm_server, loras) -> None:
    with gateway.http() as c:
        assert (
            c.post(
                "/admin/adapters", json={"path": str(loras[0]), "name": "faq", "description": "questions"}
            ).status_code
            == 201
        )
        try:
            cards = {m.id: m for m in gateway.openai().models.list().data}
            assert cards[SERVED_NAME].model_extra.get("parent") is None
            assert cards["faq"].model_extra["parent"] == SERVED_NAME
            out = gateway.openai().chat.completions.with_raw_response.create(
                model="faq", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
            assert out.headers["x-carafe-adapter"] == "faq@1" and out.parse().usage.completion_tokens == 2
            card = vllm_models(vllm_server)["faq@1"]  # loaded on demand through vLLM's runtime LoRA API
            assert card["parent"] == SERVED_NAME and card["root"] == str(
                gateway.state.router.registry.get("faq", 1).path
            )
        finally:
            c.delete("/admin/adapters/faq")
