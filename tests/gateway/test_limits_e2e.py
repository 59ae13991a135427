"""Issue 29 M6: limits that count work, through a real gateway.

The attacks as shown: one `/v1/completions` asking for prompts × `n` generations,
one `/v1/embeddings` with thousands of long inputs, a prompt far over any model's
length templated and tokenized before any check, and one key holding every engine
slot. Each is refused with the field and the setting that limits it; the slots
come back when the streams end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.gateway.conftest import BASE_MODEL, Gateway, make_gateway
from tests.gateway.test_bad_input import assert_openai_error, post

LIMITS = {
    "max_generations_per_request": 4,
    "max_embedding_inputs": 4,
    "max_embedding_chars": 1000,
    "max_prompt_chars": 5000,
    "max_messages": 10,
    "max_inflight_per_key": 3,
    "max_concurrent_generations": 4,
}
LONG = {"max_tokens": 400, "ignore_eos": True, "stream": True}


@pytest.fixture(scope="module")
def limited(tmp_path_factory) -> Iterator[Gateway]:
    for gw in make_gateway(tmp_path_factory, "limited", **LIMITS):
        gw.keys["bob"] = gw.state.keys.create("bob", rpm=100_000)[0]
        yield gw


def test_prompts_times_n_over_the_cap_is_refused_naming_n(limited: Gateway) -> None:
    body = {"model": BASE_MODEL, "prompt": ["a", "b", "c"], "n": 2, "max_tokens": 1}
    err = assert_openai_error(post(limited, body, path="/v1/completions"), 400, "n")
    assert "6 generations" in err["message"] and "server.max_generations_per_request" in err["message"]
    ok = post(limited, {**body, "n": 1}, path="/v1/completions")
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 3
    never = post(limited, {**body, "prompt": ["a"] * 4, "n": 1}, path="/v1/completions")  # 4 > 3 per key
    assert assert_openai_error(never, 400)["code"] == "too_many_generations"


def test_embedding_input_count_and_size_are_capped(limited: Gateway) -> None:
    many = {"model": "all-MiniLM-L6-v2", "input": ["leave policy"] * 5}
    err = assert_openai_error(post(limited, many, path="/v1/embeddings"), 400, "input")
    assert "server.max_embedding_inputs" in err["message"]
    big = {"model": "all-MiniLM-L6-v2", "input": ["x" * 600, "y" * 600]}
    err = assert_openai_error(post(limited, big, path="/v1/embeddings"), 413, "input")
    assert "1200 characters" in err["message"] and "server.max_embedding_chars" in err["message"]


def test_oversized_prompt_is_refused_before_templating(limited: Gateway) -> None:
    huge = {"model": BASE_MODEL, "messages": [{"role": "user", "content": "word " * 2000}]}
    err = assert_openai_error(post(limited, huge), 413, "messages")
    assert err["code"] == "input_too_large" and "server.max_prompt_chars" in err["message"]
    many = {"model": BASE_MODEL, "messages": [{"role": "user", "content": "hi"}] * 11}
    assert_openai_error(post(limited, many), 400, "messages")
    prompt = {"model": BASE_MODEL, "prompt": "word " * 2000}
    assert_openai_error(post(limited, prompt, path="/v1/completions"), 413, "prompt")
    responses = {"model": BASE_MODEL, "input": "word " * 2000}
    assert_openai_error(post(limited, responses, path="/v1/responses"), 413, "input")


def _open_stream(client: httpx.Client, gw: Gateway, key: str) -> httpx.Response:
    body = {"model": BASE_MODEL, "messages": [{"role": "user", "content": "Tell a long story."}], **LONG}
    request = client.build_request(
        "POST", f"{gw.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    return client.send(request, stream=True)


def _wait_idle(gw: Gateway) -> None:
    deadline = time.monotonic() + 60
    while gw.state.slots.in_flight() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gw.state.slots.in_flight() == 0


def test_in_flight_caps_per_key_and_in_all(limited: Gateway) -> None:
    with httpx.Client(timeout=60) as client:
        held = [_open_stream(client, limited, limited.user_key) for _ in range(3)]
        try:
            assert [r.status_code for r in held] == [200, 200, 200]
            third = _open_stream(client, limited, limited.user_key)
            third.read()
            assert_openai_error(third, 429)
            assert third.json()["error"]["code"] == "too_many_in_flight"
            assert int(third.headers["retry-after"]) >= 1
            held.append(_open_stream(client, limited, limited.keys["bob"]))  # another key still gets in
            assert held[-1].status_code == 200
            full = _open_stream(client, limited, limited.keys["bob"])
            full.read()
            assert_openai_error(full, 503)
            assert full.json()["error"]["code"] == "server_busy" and "retry-after" in full.headers
        finally:
            for r in held:
                r.close()
    _wait_idle(limited)
    after = post(limited, {"model": BASE_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert after.status_code == 200


def test_prompt_over_the_model_length_is_refused_after_off_loop_tokenizing(gateway: Gateway) -> None:
    """Under the character cap but over the model: counted in a worker thread, a 413 naming the field
    (before, the engine templated and tokenized it on the event loop and blamed max_tokens)."""
    long = "word " * 5000
    chat = post(gateway, {"model": BASE_MODEL, "messages": [{"role": "user", "content": long}], "max_tokens": 10})
    assert assert_openai_error(chat, 413, "messages")["code"] == "context_length_exceeded"
    completion = post(
        gateway, {"model": BASE_MODEL, "prompt": ["short", long], "max_tokens": 10}, path="/v1/completions"
    )
    assert assert_openai_error(completion, 413, "prompt")["code"] == "context_length_exceeded"
    response = post(gateway, {"model": BASE_MODEL, "input": long}, path="/v1/responses")
    assert assert_openai_error(response, 413, "input")["code"] == "context_length_exceeded"
