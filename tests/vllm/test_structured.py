"""Structured outputs, tool calls and logprobs through a Carafe gateway in front of a
real vLLM: the constraint travels as vLLM's own ``structured_outputs``, so even the
135M model answers with JSON that validates, and a named tool call carries valid
arguments."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.vllm.conftest import Gateway
from tests.vllm.launch import SERVED_NAME

pytestmark = pytest.mark.vllm

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}, "days": {"type": "integer"}},
    "required": ["city", "days"],
    "additionalProperties": False,
}


def test_json_schema_output_validates_on_vllm(gateway: Gateway) -> None:
    r = gateway.openai().chat.completions.create(
        model=SERVED_NAME,
        messages=[{"role": "user", "content": "Plan a trip: give a city and a number of days as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "trip", "schema": SCHEMA, "strict": True}},
        max_tokens=40,
        temperature=0,
    )
    jsonschema.validate(json.loads(r.choices[0].message.content), SCHEMA)


def test_named_tool_call_has_valid_arguments_on_vllm(gateway: Gateway) -> None:
    tool = {"type": "function", "function": {"name": "book_trip", "parameters": SCHEMA}}
    r = gateway.openai().chat.completions.create(
        model=SERVED_NAME,
        messages=[{"role": "user", "content": "Book three days in Lisbon."}],
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "book_trip"}},
        max_tokens=40,
        temperature=0,
    )
    choice = r.choices[0]
    [call] = choice.message.tool_calls
    assert call.function.name == "book_trip" and choice.finish_reason == "tool_calls"
    jsonschema.validate(json.loads(call.function.arguments), SCHEMA)


def test_logprobs_come_from_vllm(gateway: Gateway) -> None:
    r = gateway.openai().chat.completions.create(
        model=SERVED_NAME,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=3,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    content = r.choices[0].logprobs.content
    assert len(content) == 3 and all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in content)
    assert "".join(t.token for t in content) == r.choices[0].message.content
