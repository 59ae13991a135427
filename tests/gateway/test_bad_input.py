"""Bad input gets a clear 4xx in OpenAI's error shape, naming the field; never a 500."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.gateway.conftest import BASE_MODEL, Gateway

MSG = [{"role": "user", "content": "hi"}]


def post(gw: Gateway, body, *, path: str = "/v1/chat/completions", key: str | None = None, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or gw.user_key}"}
    headers.update(kw.pop("headers", {}))
    if not isinstance(body, (dict, list)):
        headers.setdefault("Content-Type", "application/json")
        return httpx.post(f"{gw.url}{path}", content=body, headers=headers, timeout=60, **kw)
    return httpx.post(f"{gw.url}{path}", json=body, headers=headers, timeout=60, **kw)


def assert_openai_error(r: httpx.Response, status: int, param: str | None = "__any__") -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    if param != "__any__":
        assert err["param"] == param, err
    return err


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": BASE_MODEL}, "messages"),
        ({"messages": MSG}, "model"),
        ({"model": BASE_MODEL, "messages": []}, "messages"),
        ({"model": BASE_MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"model": BASE_MODEL, "messages": "hello"}, "messages"),
        ({"model": BASE_MODEL, "messages": MSG, "temperature": -1}, "temperature"),
        ({"model": BASE_MODEL, "messages": MSG, "temperature": "hot"}, "temperature"),
        ({"model": BASE_MODEL, "messages": MSG, "max_tokens": 0}, "max_tokens"),
        ({"model": BASE_MODEL, "messages": MSG, "max_tokens": 10**9}, "max_tokens"),
        ({"model": BASE_MODEL, "messages": MSG, "top_p": 0}, "top_p"),
        ({"model": BASE_MODEL, "messages": MSG, "n": 0}, "n"),
        ({"model": BASE_MODEL, "messages": MSG, "n": 1000}, "n"),
        ({"model": BASE_MODEL, "messages": MSG, "stop": ""}, "stop"),
        ({"model": BASE_MODEL, "messages": MSG, "frobnicate": True}, "frobnicate"),
        ({"model": BASE_MODEL, "messages": MSG, "logprobs": 5}, "logprobs"),
        ({"model": BASE_MODEL, "messages": MSG, "top_logprobs": 2}, "top_logprobs"),
        ({"model": BASE_MODEL, "messages": MSG, "logprobs": True, "top_logprobs": 99}, "top_logprobs"),
        ({"model": BASE_MODEL, "messages": MSG, "response_format": {"type": "yaml"}}, "response_format"),
        (
            {
                "model": BASE_MODEL,
                "messages": MSG,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "nonsense"}},
                },
            },
            "response_format",
        ),
        (
            {
                "model": BASE_MODEL,
                "messages": MSG,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "(?<=a)b"}},
                },
            },
            "response_format",
        ),
        ({"model": BASE_MODEL, "messages": MSG, "guided_regex": "(unclosed"}, "guided_regex"),
        (
            {
                "model": BASE_MODEL,
                "messages": MSG,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "strict": True, "schema": {"type": "array", "uniqueItems": True}},
                },
            },
            "response_format",
        ),
        ({"model": BASE_MODEL, "messages": MSG, "structured_outputs": {"xml": "<a/>"}}, "structured_outputs"),
        ({"model": BASE_MODEL, "messages": MSG, "guided_json": {"type": "object"}, "guided_regex": "a"}, None),
        ({"model": BASE_MODEL, "messages": MSG, "use_beam_search": True}, "use_beam_search"),
        (
            {
                "model": BASE_MODEL,
                "messages": MSG,
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}},
            },
            "tool_choice",
        ),
        ({"model": BASE_MODEL, "messages": MSG, "tool_choice": "required"}, "tool_choice"),
        (
            {
                "model": BASE_MODEL,
                "messages": MSG,
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}],
                "tool_choice": "required",
            },
            "tools",
        ),
        ({"model": BASE_MODEL, "messages": MSG, "tools": [{"type": "retrieval"}]}, None),
        ({"model": BASE_MODEL, "messages": [{"role": "tool", "content": "42"}]}, "messages[0]"),
        ({"model": BASE_MODEL, "messages": MSG, "stream_options": {"include_usage": True}}, "stream_options"),
        ({"model": BASE_MODEL, "messages": [{"role": "user"}]}, "messages[0]"),
        (
            {"model": BASE_MODEL, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            None,
        ),
    ],
)
def test_invalid_chat_bodies_are_400_naming_the_field(gateway: Gateway, body, param) -> None:
    err = assert_openai_error(post(gateway, body), 400)
    assert err["type"] == "invalid_request_error"
    if param is not None:
        assert err["param"] == param, err


def test_malformed_json(gateway: Gateway) -> None:
    err = assert_openai_error(post(gateway, b'{"model": "x", "messages": [}'), 400)
    assert err["code"] == "invalid_json"


def test_non_utf8_body(gateway: Gateway) -> None:
    assert_openai_error(post(gateway, b'{"model": "\xff\xfe", "messages": []}'), 400)


def test_huge_body_is_413(gateway: Gateway) -> None:
    big = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"a" * (20 * 1024 * 1024) + b'"}]}'
    err = assert_openai_error(post(gateway, big), 413)
    assert err["code"] == "request_too_large"


def test_huge_chunked_body_without_length_is_413(gateway: Gateway) -> None:
    def chunks():
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"a" * (1024 * 1024)
        yield b'"}]}'

    assert_openai_error(post(gateway, chunks()), 413)


def test_prompt_longer_than_context_is_a_client_error(gateway: Gateway) -> None:
    long = "word " * 5000
    r = post(gateway, {"model": BASE_MODEL, "messages": [{"role": "user", "content": long}], "max_tokens": 10})
    assert r.status_code in (400, 413), r.text
    assert_openai_error(r, r.status_code)


def test_unknown_model_404(gateway: Gateway) -> None:
    err = assert_openai_error(post(gateway, {"model": "gpt-17", "messages": MSG}), 404, "model")
    assert err["code"] == "model_not_found"


def test_unknown_endpoint_is_openai_shaped_404(gateway: Gateway) -> None:
    assert_openai_error(httpx.get(f"{gateway.url}/v1/nothing-here"), 404)


def test_wrong_method_is_openai_shaped(gateway: Gateway) -> None:
    assert_openai_error(httpx.get(f"{gateway.url}/v1/chat/completions"), 405)


def test_completions_and_embeddings_bad_input(gateway: Gateway) -> None:
    assert_openai_error(post(gateway, {"model": BASE_MODEL, "prompt": []}, path="/v1/completions"), 400, "prompt")
    assert_openai_error(
        post(gateway, {"model": BASE_MODEL, "prompt": "x", "suffix": "y"}, path="/v1/completions"), 400, "suffix"
    )
    assert_openai_error(post(gateway, {"model": "all-MiniLM-L6-v2", "input": []}, path="/v1/embeddings"), 400, "input")
    assert_openai_error(post(gateway, {"model": "nope", "input": "x"}, path="/v1/embeddings"), 404, "model")
    assert_openai_error(
        post(gateway, {"model": "all-MiniLM-L6-v2", "input": "x", "dimensions": 3}, path="/v1/embeddings"),
        400,
        "dimensions",
    )


# --- auth ----------------------------------------------------------------------------


def test_missing_key_is_401(gateway: Gateway) -> None:
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": BASE_MODEL, "messages": MSG})
    err = assert_openai_error(r, 401)
    assert err["type"] == "authentication_error"


@pytest.mark.parametrize("key", ["crf_nope_nope", "sk-123", "crf_" + "a" * 12 + "_" + "b" * 43, "Bearer"])
def test_wrong_key_is_401(gateway: Gateway, key: str) -> None:
    r = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert_openai_error(r, 401)


def test_tampered_secret_of_a_real_key_is_401(gateway: Gateway) -> None:
    tampered = gateway.user_key[:-2] + ("AA" if not gateway.user_key.endswith("AA") else "BB")
    with pytest.raises(openai.AuthenticationError):
        gateway.client(tampered).models.list()


def test_admin_endpoint_needs_admin_role(gateway: Gateway) -> None:
    r = httpx.get(f"{gateway.url}/admin/keys", headers={"Authorization": f"Bearer {gateway.user_key}"})
    err = assert_openai_error(r, 403)
    assert err["type"] == "permission_error"
    assert_openai_error(httpx.get(f"{gateway.url}/admin/keys"), 401)
    ok = httpx.get(f"{gateway.url}/admin/keys", headers={"Authorization": f"Bearer {gateway.admin_key}"})
    assert ok.status_code == 200
    assert all("secret_sha256" not in k for k in ok.json()["data"])


def test_admin_creates_key_that_works_and_revoke_stops_it(gateway: Gateway) -> None:
    admin = {"Authorization": f"Bearer {gateway.admin_key}"}
    made = httpx.post(f"{gateway.url}/admin/keys", json={"user": "bob", "groups": ["finance"]}, headers=admin).json()
    assert gateway.client(made["key"]).models.list().data
    httpx.delete(f"{gateway.url}/admin/keys/{made['key_id']}", headers=admin).raise_for_status()
    with pytest.raises(openai.AuthenticationError):
        gateway.client(made["key"]).models.list()


def test_key_restricted_to_models_gets_403_elsewhere(gateway: Gateway) -> None:
    key, _ = gateway.state.keys.create("carol", models=["some-adapter"])
    with pytest.raises(openai.PermissionDeniedError) as exc:
        gateway.client(key).chat.completions.create(model=BASE_MODEL, messages=MSG, max_tokens=2)
    assert exc.value.body["param"] == "model"
    assert BASE_MODEL not in [m.id for m in gateway.client(key).models.list().data]


def test_rate_limit_per_key_with_retry_after(gateway: Gateway) -> None:
    limited, _ = gateway.state.keys.create("dave", rpm=3)
    other, _ = gateway.state.keys.create("erin", rpm=3)
    for _ in range(3):
        assert httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {limited}"}).status_code == 200
    r = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {limited}"})
    err = assert_openai_error(r, 429)
    assert err["type"] == "rate_limit_error"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # another key is not affected
    assert httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {other}"}).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (
            "/v1/chat/completions",
            '{"model": "M", "messages": [{"role": "user", "content": "hi \\ud800"}]}',
            "messages[0].content",
        ),
        (
            "/v1/chat/completions",
            '{"model": "M", "messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}',
            "messages[0].content[0].text",
        ),
        ("/v1/completions", '{"model": "M", "prompt": ["ok", "bad \\ud800"]}', "prompt"),
        ("/v1/embeddings", '{"model": "all-MiniLM-L6-v2", "input": "\\ud800"}', "input"),
        ("/v1/responses", '{"model": "M", "input": "\\ud800 hello"}', "input"),
        ("/v1/responses", '{"model": "M", "input": "hi", "instructions": "\\udc00"}', "instructions"),
    ],
)
def test_lone_surrogate_is_a_400_naming_the_field(gateway: Gateway, path: str, body: str, param: str) -> None:
    """Issue 29 L7: "\\ud800" in a message was a 500 and made the embedding-based guards raise."""
    err = assert_openai_error(post(gateway, body.replace('"M"', f'"{BASE_MODEL}"'), path=path), 400, param)
    assert "surrogate" in err["message"]
