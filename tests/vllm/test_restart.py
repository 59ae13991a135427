"""vLLM goes down and comes back under a running gateway: while it is down every
call is a clear 503 (never a hang, never a 500) and /readyz says so; once it is
back, the reconcile loop re-applies the registry's adapter set by itself.

Runs last (it restarts the session's vLLM, about a minute)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.vllm.conftest import Gateway, start_gateway, vllm_models
from tests.vllm.launch import VLLMServer

pytestmark = pytest.mark.vllm


@pytest.fixture
def reconciling_gateway(tmp_path: Path, vllm_server: VLLMServer, base_digest: str) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path / "gw", vllm_server, base_digest, reconcile_interval_s=1)
    yield gw
    gw.server.stop()


def wait_for(check: Callable[[], bool], timeout: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def test_vllm_down_is_a_503_and_a_restart_gets_the_adapters_back(
    reconciling_gateway: Gateway, vllm_server: VLLMServer, loras: list[Path]
) -> None:
    gw = reconciling_gateway
    wanted = {"hr@1", "pay@1"}
    with gw.http() as c:
        for name, src in (("hr", loras[0]), ("pay", loras[1]), ("hr", loras[2])):
            assert c.post("/admin/adapters", json={"path": str(src), "name": name}).status_code == 201
        assert wait_for(lambda: wanted <= set(vllm_models(vllm_server)))  # the loop loaded the stable versions

        vllm_server.stop()
        client = gw.openai()
        client = client.with_options(timeout=30)  # a hang would end here, as a failure
        for kwargs in ({}, {"stream": True}):
            with pytest.raises(openai.APIStatusError) as err:
                client.chat.completions.create(
                    model="hr", messages=[{"role": "user", "content": "hi"}], max_tokens=2, **kwargs
                )
            assert err.value.status_code == 503, err.value.response.text
            assert "cannot be reached" in err.value.message and "is it running" in err.value.message
        r = c.post("/admin/adapters/hr/promote", json={"version": 2})  # needs a load
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_unavailable"
        assert wait_for(lambda: c.get("/readyz").status_code == 503, timeout=10)

        vllm_server.start()  # the same port, nothing loaded
        assert wait_for(lambda: wanted <= set(vllm_models(vllm_server))), "the desired set was not re-applied"
        assert wait_for(lambda: c.get("/readyz").status_code == 200, timeout=10)
        out = gw.openai().chat.completions.with_raw_response.create(
            model="hr", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert out.headers["x-carafe-adapter"] == "hr@1" and out.parse().usage.completion_tokens == 2
        for name in ("hr", "pay"):
            c.delete(f"/admin/adapters/{name}")
