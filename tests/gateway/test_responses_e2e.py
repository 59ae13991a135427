"""POST /v1/responses with the OpenAI SDK's responses.create against the real gateway."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from tests.gateway.conftest import BASE_MODEL, Gateway
from tests.gateway.test_structured_tools_e2e import WEATHER

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_text_input_with_instructions(gateway: Gateway) -> None:
    r = gateway.client().responses.create(
        model=BASE_MODEL,
        input="Name three colours.",
        instructions="Answer briefly.",
        max_output_tokens=12,
        temperature=0,
    )
    assert r.status in ("completed", "incomplete") and r.output_text
    assert r.usage.output_tokens <= 12 and r.usage.input_tokens > 0
    if r.status == "incomplete":
        assert r.incomplete_details.reason == "max_output_tokens"


def test_message_list_and_previous_response_id(gateway: Gateway) -> None:
    client = gateway.client()
    first = client.responses.create(
        model=BASE_MODEL, max_output_tokens=10, temperature=0, input=[{"role": "user", "content": "My name is Ada."}]
    )
    second = client.responses.create(
        model=BASE_MODEL, input="What is my name?", previous_response_id=first.id, max_output_tokens=10, temperature=0
    )
    assert second.previous_response_id == first.id and second.output_text
    other_key, _ = gateway.state.keys.create("mallory", rpm=1000)
    with pytest.raises(openai.NotFoundError) as err:  # another key never sees the conversation
        gateway.client(other_key).responses.create(
            model=BASE_MODEL, input="And mine?", previous_response_id=first.id, max_output_tokens=5
        )
    assert err.value.body["param"] == "previous_response_id"
    # L3: a new key with the same user name (and no groups) is another credential: no continuing
    namesake, _ = gateway.state.keys.create("alice", rpm=1000)
    with pytest.raises(openai.NotFoundError):
        gateway.client(namesake).responses.create(
            model=BASE_MODEL, input="And mine?", previous_response_id=first.id, max_output_tokens=5
        )


def test_streaming_events(gateway: Gateway) -> None:
    events = list(
        gateway.client().responses.create(
            model=BASE_MODEL, input="Say hello.", max_output_tokens=10, temperature=0, stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")
    assert "response.output_text.delta" in kinds
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-1].response.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_text_format_json_schema(gateway: Gateway) -> None:
    r = gateway.client().responses.create(
        model=BASE_MODEL,
        input="Invent a person.",
        max_output_tokens=60,
        temperature=0,
        text={"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}},
    )
    jsonschema.validate(json.loads(r.output_text), PERSON)


def test_function_tool_call(gateway: Gateway) -> None:
    tool = {"type": "function", **WEATHER["function"]}
    r = gateway.client().responses.create(
        model=BASE_MODEL,
        input="What is the weather in Oslo?",
        tools=[tool],
        tool_choice="required",
        max_output_tokens=60,
        temperature=0,
    )
    (call,) = [o for o in r.output if o.type == "function_call"]
    assert call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER["function"]["parameters"])
    follow = gateway.client().responses.create(
        model=BASE_MODEL,
        previous_response_id=r.id,
        max_output_tokens=20,
        temperature=0,
        tools=[tool],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temperature": 20}'}],
    )
    assert follow.status in ("completed", "incomplete")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": BASE_MODEL, "input": "hi", "frobnicate": 1}, "frobnicate"),
        ({"model": BASE_MODEL, "input": []}, "input"),
        ({"model": BASE_MODEL, "input": "hi", "previous_response_id": "resp_nope"}, "previous_response_id"),
        (
            {
                "model": BASE_MODEL,
                "input": "hi",
                "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "nonsense"}}},
            },
            "text.format",
        ),
    ],
)
def test_bad_requests_name_the_field(gateway: Gateway, body, param) -> None:
    r = httpx.post(
        f"{gateway.url}/v1/responses", json=body, timeout=60, headers={"Authorization": f"Bearer {gateway.user_key}"}
    )
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["param"] == param, r.text


def test_needs_a_key(gateway: Gateway) -> None:
    r = httpx.post(f"{gateway.url}/v1/responses", json={"model": BASE_MODEL, "input": "hi"}, timeout=30)
    assert r.status_code == 401
