"""Twenty varied json_schema requests through the gateway: every output validates."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pytest

from tests.gateway.conftest import BASE_MODEL, Gateway


def s(n: int = 24) -> dict:
    return {"type": "string", "maxLength": n}


def obj(props: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": props, "required": required or list(props), "additionalProperties": False}


CASES = [
    ("Describe a person.", obj({"name": s(), "age": {"type": "integer", "minimum": 0, "maximum": 120}})),
    ("Give a city and its country.", obj({"city": s(), "country": s()})),
    ("Is water wet? Answer with a boolean and a reason.", obj({"answer": {"type": "boolean"}, "reason": s(60)})),
    ("Rate this movie from 1 to 5.", obj({"rating": {"type": "integer", "minimum": 1, "maximum": 5}})),
    ("List three fruits.", obj({"fruits": {"type": "array", "items": s(16), "minItems": 3, "maxItems": 3}})),
    ("Pick a colour.", obj({"colour": {"enum": ["red", "green", "blue"]}})),
    ("What is the temperature outside?", obj({"celsius": {"type": "number", "minimum": -50, "maximum": 60}})),
    ("Make a todo item.", obj({"title": s(40), "done": {"type": "boolean"}, "priority": {"enum": ["low", "high"]}})),
    (
        "Describe a book.",
        obj(
            {
                "title": s(),
                "author": obj({"first": s(), "last": s()}),
                "year": {"type": "integer", "minimum": 1000, "maximum": 2100},
            }
        ),
    ),
    ("Give an HTTP status code.", obj({"code": {"type": "integer", "minimum": 100, "maximum": 599}})),
    (
        "Sentiment of 'I love it'.",
        obj(
            {
                "label": {"enum": ["positive", "negative", "neutral"]},
                "score": {"type": "number", "minimum": 0, "maximum": 1},
            }
        ),
    ),
    ("Give me a product SKU.", obj({"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"}})),
    ("A point on a plane.", obj({"x": {"type": "integer"}, "y": {"type": "integer"}})),
    ("Name a planet, maybe with a moon.", obj({"planet": s(), "moon": {"anyOf": [s(), {"type": "null"}]}})),
    (
        "Two tags for a blog post on cooking.",
        obj({"tags": {"type": "array", "items": {"enum": ["food", "home", "tips"]}, "minItems": 2, "maxItems": 2}}),
    ),
    ("Give an address.", obj({"street": s(30), "zip": {"type": "string", "pattern": "^[0-9]{5}$"}})),
    (
        "Summarise: the cat sat on the mat.",
        obj({"summary": s(50), "words": {"type": "integer", "minimum": 1, "maximum": 50}}),
    ),
    (
        "An order with two lines.",
        obj(
            {
                "lines": {
                    "type": "array",
                    "maxItems": 2,
                    "minItems": 1,
                    "items": obj({"item": s(16), "qty": {"type": "integer", "minimum": 1, "maximum": 9}}),
                }
            }
        ),
    ),
    ("A yes/no answer: is the sun a star?", {"enum": ["yes", "no"]}),
    ("An optional nickname for Robert.", obj({"first": s(), "nick": s(12)}, required=["first"])),
]


@pytest.mark.slow
def test_twenty_structured_outputs_validate(gateway: Gateway) -> None:
    client = gateway.client()

    def run(case: tuple[str, dict]) -> tuple[str, dict]:
        prompt, schema = case
        r = client.chat.completions.create(
            model=BASE_MODEL,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=160,
            temperature=0.7,
            seed=7,
            response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}},
        )
        return r.choices[0].message.content, schema

    with ThreadPoolExecutor(8) as pool:  # eight at a time: constrained rows batched together
        results = list(pool.map(run, CASES))
    for text, schema in results:
        jsonschema.validate(json.loads(text), schema)
