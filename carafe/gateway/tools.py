"""Tool calling over any engine: the tools in the prompt, the calls out of the text.

The base model's chat template has no tool format, so tools are written into the
system turn in the widely used Hermes form (``<tools>`` with the function
signatures, calls as ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``);
earlier assistant calls and ``tool`` results are rendered the same way.

- ``auto``: the model chooses; :class:`ToolCallParser` streams text until a
  ``<tool_call>`` opens and parses the calls when the output ends.
- ``required``: the output is constrained to one call of any listed function
  (name + arguments matching its parameter schema).
- a named function: the output is constrained to that function's arguments.
- ``none`` (or no tools): plain chat; the tools are not shown to the model.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from carafe.adapters.engine import ChatMessage, OutputConstraint
from carafe.gateway.protocol import ChatMessageIn, ToolCall, ToolDef

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_ANY_OBJECT: dict[str, Any] = {"type": "object"}


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class ToolPlan:
    """How one request uses its tools: the mode, the forced function, the constraint."""

    mode: str  # none | auto | required | named
    tools: list[ToolDef] = field(default_factory=list)
    function: str | None = None  # the named function
    constraint: OutputConstraint | None = None

    @property
    def active(self) -> bool:
        return self.mode != "none"


def _parameters(tool: ToolDef) -> dict[str, Any]:
    return tool.function.parameters or _ANY_OBJECT


def plan_tools(tools: list[ToolDef] | None, tool_choice: str | dict[str, Any] | None) -> ToolPlan:
    if not tools or tool_choice == "none":
        return ToolPlan("none")
    if isinstance(tool_choice, dict):
        name = tool_choice["function"]["name"]
        tool = next(t for t in tools if t.function.name == name)
        return ToolPlan("named", tools, name, OutputConstraint("json_schema", _parameters(tool), param="tools"))
    if tool_choice == "required":
        calls = [
            {
                "type": "object",
                "properties": {"name": {"const": t.function.name}, "arguments": _parameters(t)},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for t in tools
        ]
        schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
        return ToolPlan("required", tools, None, OutputConstraint("json_schema", schema, param="tools"))
    return ToolPlan("auto", tools)


def tools_system_prompt(plan: ToolPlan) -> str:
    sigs = "\n".join(json.dumps(t.model_dump(exclude_none=True)) for t in plan.tools)
    return (
        "You may call one or more functions to assist with the user query. You are provided with function "
        f"signatures within <tools></tools> XML tags:\n<tools>\n{sigs}\n</tools>\n\nFor each function call, "
        "return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n"
        f'{OPEN}\n{{"name": <function-name>, "arguments": <args-json-object>}}\n{CLOSE}'
    )


def render_messages(messages: list[ChatMessageIn], plan: ToolPlan) -> list[ChatMessage]:
    """Engine messages: tool calls and tool results as text, the tools in the system turn."""
    out: list[ChatMessage] = []
    for m in messages:
        role = "system" if m.role == "developer" else m.role
        text = m.text()
        if m.tool_calls:
            calls = [
                f'{OPEN}\n{{"name": {json.dumps(c.function.name)}, "arguments": {c.function.arguments or "{}"}}}\n'
                f"{CLOSE}"
                for c in m.tool_calls
            ]
            text = "\n".join(([text] if text else []) + calls)
        if role == "tool":
            text = f"<tool_response>\n{text}\n</tool_response>"
        out.append(ChatMessage(role=role, content=text))
    if plan.active:
        prompt = tools_system_prompt(plan)
        if out and out[0].role == "system":
            out[0] = ChatMessage("system", f"{out[0].content}\n\n{prompt}")
        else:
            out.insert(0, ChatMessage("system", prompt))
    return out


def _call(name: str, arguments: Any) -> ToolCall:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return ToolCall(id=call_id(), function={"name": name, "arguments": args})


def parse_constrained(plan: ToolPlan, text: str) -> list[ToolCall]:
    """The call of a ``required``/``named`` output (the whole output is JSON)."""
    if plan.mode == "named":
        assert plan.function is not None
        return [_call(plan.function, text.strip() or "{}")]
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return []
    return [_call(obj["name"], obj.get("arguments", {}))] if isinstance(obj, dict) and "name" in obj else []


def parse_tagged(text: str, names: set[str]) -> tuple[str, list[ToolCall]]:
    """``auto`` output: (content before the first call, the calls with known names)."""
    start = text.find(OPEN)
    if start < 0:
        return text, []
    content, calls = text[:start].strip(), []
    for block in text[start:].split(OPEN)[1:]:
        body = block.split(CLOSE)[0].strip()
        try:
            obj = json.loads(body)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and obj.get("name") in names:
            calls.append(_call(obj["name"], obj.get("arguments", {})))
    return (content, calls) if calls else (text, [])


class ToolCallParser:
    """Streams ``auto`` output: text is released until ``<tool_call>`` may begin;
    from there on it is held and parsed when the output ends."""

    def __init__(self, plan: ToolPlan) -> None:
        self.plan = plan
        self._names = {t.function.name for t in plan.tools}
        self.text = ""
        self._released = 0
        self._in_call = False

    def feed(self, piece: str) -> str:
        """New content that may be shown now."""
        self.text += piece
        if self._in_call:
            return ""
        found = self.text.find(OPEN, self._released)
        if found >= 0:
            self._in_call = True
            out, self._released = self.text[self._released : found], found
            return out
        keep = next((n for n in range(min(len(OPEN) - 1, len(self.text)), 0, -1) if self.text.endswith(OPEN[:n])), 0)
        end = len(self.text) - keep
        out, self._released = self.text[self._released : end], max(self._released, end)
        return out

    def finish(self) -> tuple[str, list[ToolCall]]:
        """(content still held back, the parsed calls)."""
        _content, calls = parse_tagged(self.text, self._names)
        if calls:
            return "", calls
        return self.text[self._released :], []
