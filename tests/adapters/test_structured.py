"""Constrained decoding and logprobs on the real model: per-row grammar masks in a shared batch,
on the fp32 engine and on the int4 native engine."""

from __future__ import annotations

import asyncio
import json
import math

import jsonschema
import pytest

from carafe.adapters.engine import OutputConstraint
from carafe.errors import InvalidInput
from tests.adapters.conftest import ask, collect


@pytest.fixture(params=["fp32", "int4-native"])
def engine(request, engine, native_engine):
    return engine if request.param == "fp32" else native_engine


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}


async def test_json_schema_output_validates_while_free_rows_share_the_batch(engine):
    constrained = OutputConstraint("json_schema", PERSON)
    texts = await asyncio.gather(
        collect(ask(engine, "Describe a person.", temperature=0.8, seed=1, max_tokens=80, constraint=constrained)),
        collect(ask(engine, "Name three colours.", temperature=0, max_tokens=12)),
        collect(ask(engine, "Tell me about Paris.", temperature=0, max_tokens=80, constraint=constrained)),
    )
    free, _ = await collect(ask(engine, "Name three colours.", temperature=0, max_tokens=12))
    assert texts[1][0] == free  # the free row is untouched by its neighbours' masks
    for text, chunks in (texts[0], texts[2]):
        jsonschema.validate(json.loads(text), PERSON)
        assert chunks[-1].finish_reason == "stop"


async def test_json_object_parses(engine):
    text, _ = await collect(
        ask(
            engine,
            "Reply in JSON with keys name and colour for a cat.",
            temperature=0,
            max_tokens=120,
            constraint=OutputConstraint("json_object"),
        )
    )
    assert isinstance(json.loads(text), dict)


async def test_regex_constraint(engine):
    text, _ = await collect(
        ask(
            engine,
            "What is 2+2?",
            temperature=0,
            max_tokens=10,
            constraint=OutputConstraint("regex", r"(yes|no|[0-9]{1,3})"),
        )
    )
    assert text in ("yes", "no") or text.isdigit()


async def test_bad_schema_is_invalid_input_naming_the_field(engine):
    with pytest.raises(InvalidInput) as err:
        await collect(
            ask(
                engine,
                "Hi",
                max_tokens=5,
                constraint=OutputConstraint("json_schema", {"type": "nonsense"}, param="response_format"),
            )
        )
    assert err.value.param == "response_format" and "nonsense" in str(err.value)


async def test_logprobs_are_a_distribution_of_the_step(engine):
    text, chunks = await collect(ask(engine, "Name three colours.", temperature=0, max_tokens=8, logprobs=3))
    steps = [lp for c in chunks for lp in (c.logprobs or [])]
    assert len(steps) == chunks[-1].completion_tokens or len(steps) == chunks[-1].completion_tokens - 1
    assert "".join(s.token for s in steps) == text
    for s in steps:
        assert len(s.top) == 3 and s.logprob <= 0
        assert s.top[0].logprob == pytest.approx(s.logprob)  # greedy: the sampled token is the top one
        assert sum(math.exp(t.logprob) for t in s.top) <= 1.0 + 1e-4
