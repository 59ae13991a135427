"""From a request's structured-output fields to the engine's :class:`OutputConstraint`.

OpenAI's ``response_format`` (``json_object``, ``json_schema``) and vLLM's extras
(``structured_outputs`` with ``json``/``regex``/``choice``/``grammar``, and the
older ``guided_*`` fields) all become one constraint; asking for two at once is a
400 naming the second.
"""

from __future__ import annotations

import json
import re
from typing import Any

from carafe.adapters.engine import OutputConstraint
from carafe.errors import InvalidInput
from carafe.gateway.protocol import SamplingFields


def _choice_regex(choices: list[str], param: str) -> OutputConstraint:
    if not choices or not all(isinstance(c, str) and c for c in choices):
        raise InvalidInput(f"{param} must be a non-empty list of non-empty strings", param=param)
    return OutputConstraint("regex", "(" + "|".join(re.escape(c) for c in choices) + ")", param=param)


def _json(schema: Any, param: str, strict: bool = True) -> OutputConstraint:
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{param} is not valid JSON: {exc}", param=param) from None
    if schema is None or schema == {}:
        return OutputConstraint("json_object", param=param)
    if not isinstance(schema, dict):
        raise InvalidInput(f"{param} must be a JSON schema object", param=param)
    return OutputConstraint("json_schema", schema, param=param, strict=strict)


def response_format_constraint(fmt: dict[str, Any] | None, param: str = "response_format") -> OutputConstraint | None:
    """OpenAI's ``response_format`` (chat) or ``text.format`` (responses)."""
    if not fmt:
        return None
    kind = fmt.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return OutputConstraint("json_object", param=param)
    if kind == "json_schema":
        # chat nests the schema under json_schema; the Responses API puts it beside type
        spec = fmt.get("json_schema", fmt)
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise InvalidInput(f"{param}.json_schema must be an object with a 'schema'", param=param)
        # strict (OpenAI's default is false): refuse keywords the engine cannot enforce, else skip them
        return _json(spec.get("schema") or {}, param, strict=spec.get("strict") is True)
    raise InvalidInput(f"{param} type {kind!r} is not supported; use text, json_object or json_schema", param=param)


def _vllm_extra(req: SamplingFields) -> OutputConstraint | None:
    so = req.structured_outputs
    if so:
        known = {"json", "regex", "choice", "grammar", "json_object"}
        asked = [k for k in so if so[k] not in (None, False)]
        unknown = [k for k in asked if k not in known]
        if unknown:
            raise InvalidInput(f"structured_outputs.{unknown[0]} is not supported", param="structured_outputs")
        if len(asked) != 1:
            raise InvalidInput(
                "structured_outputs takes exactly one of json, regex, choice, grammar", param="structured_outputs"
            )
        (key,) = asked
        param = f"structured_outputs.{key}"
        if key == "json":
            return _json(so[key], param)
        if key == "json_object":
            return OutputConstraint("json_object", param=param)
        if key == "choice":
            return _choice_regex(so[key], param)
        return OutputConstraint("regex" if key == "regex" else "grammar", str(so[key]), param=param)
    if req.guided_json is not None:
        return _json(req.guided_json, "guided_json")
    if req.guided_regex is not None:
        return OutputConstraint("regex", req.guided_regex, param="guided_regex")
    if req.guided_choice is not None:
        return _choice_regex(req.guided_choice, "guided_choice")
    if req.guided_grammar is not None:
        return OutputConstraint("grammar", req.guided_grammar, param="guided_grammar")
    return None


def request_constraint(req: SamplingFields) -> OutputConstraint | None:
    """The one output constraint ``req`` asks for, if any."""
    fmt = response_format_constraint(getattr(req, "response_format", None))
    extra = _vllm_extra(req)
    if fmt is not None and extra is not None:
        raise InvalidInput(f"{extra.param} cannot be combined with response_format", param=extra.param)
    if (
        sum(
            x is not None
            for x in (
                req.guided_json,
                req.guided_regex,
                req.guided_choice,
                req.guided_grammar,
                req.structured_outputs or None,
            )
        )
        > 1
    ):
        raise InvalidInput("ask for one structured output at a time", param=extra.param if extra else None)
    return fmt or extra
