"""Tool plans, prompt rendering and the ``auto`` tool-call parser (no model needed)."""

from __future__ import annotations

import json

from carafe.adapters.engine import OutputConstraint, SamplingParams
from carafe.adapters.vllm import sampling_body
from carafe.gateway.protocol import ChatMessageIn, ToolDef
from carafe.gateway.tools import ToolCallParser, parse_tagged, plan_tools, render_messages

TOOLS = [
    ToolDef.model_validate(
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    )
]


def test_plans() -> None:
    assert not plan_tools(TOOLS, "none").active and not plan_tools(None, "auto").active
    assert plan_tools(TOOLS, None).mode == "auto" and plan_tools(TOOLS, None).constraint is None
    named = plan_tools(TOOLS, {"type": "function", "function": {"name": "get_weather"}})
    assert named.constraint.spec["required"] == ["city"] and named.constraint.param == "tools"
    required = plan_tools(TOOLS, "required")
    assert required.constraint.spec["properties"]["name"] == {"const": "get_weather"}


def test_render_puts_tools_calls_and_results_in_the_prompt() -> None:
    msgs = [
        ChatMessageIn(role="user", content="Weather in Oslo?"),
        ChatMessageIn.model_validate(
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            }
        ),
        ChatMessageIn(role="tool", content="sunny", tool_call_id="c1"),
    ]
    out = render_messages(msgs, plan_tools(TOOLS, "auto"))
    assert out[0].role == "system" and "<tools>" in out[0].content and '"get_weather"' in out[0].content
    assert out[2].content == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    assert out[3].role == "tool" and "sunny" in out[3].content
    assert all("<tools>" not in m.content for m in render_messages(msgs, plan_tools(TOOLS, "none")))


def test_auto_parser_streams_text_and_holds_the_call() -> None:
    parser = ToolCallParser(plan_tools(TOOLS, "auto"))
    pieces = ["Let me check. <to", 'ol_call>\n{"name": "get_weather", ', '"arguments": {"city": "Oslo"}}\n</tool_call>']
    shown = "".join(parser.feed(p) for p in pieces)
    assert shown == "Let me check. "
    held, calls = parser.finish()
    assert held == "" and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Oslo"}


def test_auto_parser_keeps_plain_text_and_unknown_tools_as_text() -> None:
    parser = ToolCallParser(plan_tools(TOOLS, "auto"))
    assert parser.feed("A <b>bold</b> answer") + parser.finish()[0] == "A <b>bold</b> answer"
    text = '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>'
    assert parse_tagged(text, {"get_weather"}) == (text, [])


def test_vllm_gets_structured_outputs_and_logprobs() -> None:
    body = sampling_body(SamplingParams(constraint=OutputConstraint("json_schema", {"type": "object"})))
    assert body["structured_outputs"] == {"json": {"type": "object"}}
    assert sampling_body(SamplingParams(constraint=OutputConstraint("regex", "a+")))["structured_outputs"] == {
        "regex": "a+"
    }


def test_the_trace_records_the_called_tool_names() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from carafe.adapters.engine import GenerationChunk
    from carafe.gateway.chat_output import ChoiceOutput
    from carafe.gateway.serving_chat import record_tool_calls

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    out = ChoiceOutput(plan_tools(TOOLS, "required"))
    out.step(GenerationChunk('{"name": "get_weather", "arguments": {"city": "Oslo"}}', finish_reason="stop"))
    assert out.finish_reason == "tool_calls"
    with provider.get_tracer("test").start_as_current_span("request"):
        record_tool_calls([out])
    (span,) = exporter.get_finished_spans()
    assert list(span.attributes["carafe.tool_calls"]) == ["get_weather"]
