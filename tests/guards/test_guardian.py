"""The guardian check against a tiny local server speaking the OpenAI chat API
(the guardian model itself is an outside system that cannot run here)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request

from carafe.guards import GuardPipeline, GuardsConfig
from carafe.guards.config import CheckSettings, GuardianConfig, PolicyConfig
from tests.servers import free_port, serve_in_thread


class FakeGuardian:
    def __init__(self) -> None:
        self.reply = "No"
        self.bodies: list[dict] = []
        self.app = FastAPI()

        @self.app.post("/v1/chat/completions")
        async def chat(request: Request) -> dict:
            self.bodies.append(await request.json())
            return {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "guardian",
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": self.reply}}
                ],
            }


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeGuardian, str]]:
    server = FakeGuardian()
    running = serve_in_thread(server.app)
    yield server, f"{running.url}/v1"
    running.stop()


def guards_with(embedder, **guardian) -> GuardPipeline:
    policy = PolicyConfig(
        input={"guardian": CheckSettings(action="block", threshold=0.5)},
        output={"guardian": CheckSettings(action="block", threshold=0.5)},
    )
    cfg = GuardsConfig(policies={"default": policy}, guardian=GuardianConfig(enabled=True, **guardian))
    return GuardPipeline.from_config(cfg, embedder=embedder)


async def test_granite_guardian_yes_blocks_and_no_allows(fake, embedder):
    server, url = fake
    guards = guards_with(embedder, base_url=url, risk="jailbreak")
    server.reply = "Yes"
    blocked = (await guards.check_input("some prompt")).blocked
    assert blocked is not None and (blocked.check, blocked.category) == ("guardian", "jailbreak")
    body = server.bodies[-1]
    assert body["chat_template_kwargs"] == {"guardian_config": {"risk_name": "jailbreak"}}
    assert body["messages"] == [{"role": "user", "content": "some prompt"}]
    server.reply = "No"
    assert (await guards.check_input("some prompt")).blocked is None
    server.reply = "<think>fine</think> <score> yes </score>"
    assert (await guards.check_input("some prompt")).blocked is not None
    await guards.aclose()


async def test_llama_guard_categories_on_output(fake, embedder):
    server, url = fake
    guards = guards_with(embedder, base_url=url, prompt_format="llama_guard")
    server.reply = "unsafe\nS10"
    stream = guards.output_stream()
    release = await stream.feed("A hateful answer. ")
    assert release.blocked is not None and release.blocked.category == "hate"
    assert server.bodies[-1]["messages"][-1] == {"role": "assistant", "content": "A hateful answer. "}
    assert "chat_template_kwargs" not in server.bodies[-1]
    server.reply = "safe"
    assert (await guards.output_stream().feed("A kind answer. ")).blocked is None
    await guards.aclose()


async def test_unreachable_guardian_is_recorded_or_fails_closed(embedder):
    url = f"http://127.0.0.1:{free_port()}/v1"
    open_guards = guards_with(embedder, base_url=url, timeout_s=2)
    result = await open_guards.check_input("hello")
    verdict = next(v for v in result.verdicts if v.check == "guardian")
    assert result.blocked is None and verdict.skipped and verdict.category == "unavailable"
    closed = guards_with(embedder, base_url=url, timeout_s=2, fail_closed=True)
    assert (await closed.check_input("hello")).blocked is not None
    await open_guards.aclose()
    await closed.aclose()


async def test_guardian_is_off_by_default(pipeline):
    assert "guardian" not in pipeline.checks
