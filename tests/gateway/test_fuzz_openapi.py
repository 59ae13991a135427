"""Fuzz the gateway's own OpenAPI spec against a running server (schemathesis):
whatever arrives, no 5xx, and every error body is in OpenAI's shape."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.gateway.conftest import Gateway, make_gateway

FUZZED = {
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/models",
    "/v1/models/{model_id}",
    "/admin/keys",
    "/admin/keys/{key_id}",
    "/healthz",
    "/readyz",
}


@pytest.fixture(scope="module")
def small_gateway(tmp_path_factory) -> Iterator[Gateway]:
    # tiny generation limits so that valid fuzzed requests stay cheap on the real model
    yield from make_gateway(
        tmp_path_factory, "fuzz", max_tokens_limit=4, default_max_tokens=2, max_n=2, max_body_bytes=256 * 1024
    )


def _operations(gw: Gateway):
    schema = schemathesis.openapi.from_url(f"{gw.url}/openapi.json")
    ops = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path in FUZZED:
            ops.append(op)
    return ops


def _check(response, case) -> None:
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzz_no_5xx_and_openai_errors(small_gateway: Gateway, mode) -> None:
    ops = _operations(small_gateway)
    assert {op.path for op in ops} >= {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
    headers = {"Authorization": f"Bearer {small_gateway.admin_key}"}
    no_invalid_form: list[str] = []  # e.g. GET /healthz has nothing to make invalid
    for op in ops:

        @settings(
            max_examples=25, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
        )
        @given(case=op.as_strategy(generation_mode=mode))
        def run(case) -> None:
            response = case.call(base_url=small_gateway.url, headers=headers, timeout=120)
            _check(response, case)

        try:
            run()
        except Unsatisfiable:
            if mode is not GenerationMode.NEGATIVE:
                raise
            no_invalid_form.append(op.path)
    assert not {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"} & set(no_invalid_form)
