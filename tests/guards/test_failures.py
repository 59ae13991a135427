"""A check that raises fails closed for the checks that protect data (configurable per check), and is
recorded as an error, never released silently; the leak guard is no oracle for text the caller dictated;
a lone surrogate never makes a check raise."""

from __future__ import annotations

import pytest

from carafe.guards import GuardPipeline, GuardsConfig
from carafe.guards.checks.leak import WITHHELD

SECRET = "The salary band for a senior engineer in Berlin is 92,000 to 118,000 euros per year."


class BrokenIndex:
    """A leak index that cannot open (a second gateway on the same data_dir)."""

    async def restricted_matches(self, text, principal):
        raise RuntimeError("the embedded index at /data/index is locked by another process")


class RestrictedIndex:
    """One restricted chunk: the salary bands."""

    async def restricted_matches(self, text, principal):
        return [("policies:hr/salary-bands-2026.md", 0.97, SECRET)]


def _policy(**leak):
    return {"default": {"input": {"injection": {}}, "output": {"leak": {"action": "redact", "threshold": 0.9, **leak}}}}


async def _answer(guards, text, **kwargs) -> tuple[str, object]:
    stream = guards.output_stream(**kwargs)
    out = (await stream.feed(text)).text + (await stream.finish()).text
    return out, stream


async def test_a_failing_leak_check_withholds_and_records_an_error():
    guards = GuardPipeline.from_config(GuardsConfig(policies=_policy()), embedder=None, leak_index=BrokenIndex())
    out, stream = await _answer(guards, SECRET + " ")
    assert SECRET not in out
    (verdict,) = [v for v in stream.verdicts if v.check == "leak"]
    assert verdict.error and verdict.action == "block" and "locked" in verdict.reason
    assert verdict.to_attributes()["carafe.guard.leak.error"] is True


async def test_on_error_allow_releases_but_still_records_the_error():
    guards = GuardPipeline.from_config(
        GuardsConfig(policies=_policy(on_error="allow")), embedder=None, leak_index=BrokenIndex()
    )
    out, stream = await _answer(guards, SECRET + " ")
    assert out.strip() == SECRET
    assert any(v.error and v.action == "allow" for v in stream.verdicts)


async def test_a_failing_injection_check_blocks_the_input(monkeypatch):
    guards = GuardPipeline.from_config(GuardsConfig(), embedder=None)

    def boom(text):
        raise ValueError("model file unreadable")

    monkeypatch.setattr(guards.checks["injection"], "score", boom)
    result = await guards.check_input("What is the capital of France?")
    assert result.blocked is not None and result.blocked.check == "injection" and result.blocked.error
    again = await guards.check_messages([("user", "What is the capital of France?")])
    assert again[0].blocked is not None  # an error is never cached as a pass


async def test_the_leak_guard_is_no_oracle_for_a_forced_choice():
    guards = GuardPipeline.from_config(GuardsConfig(policies=_policy()), embedder=None, leak_index=RestrictedIndex())
    options = [SECRET, "The salary band for a senior engineer in Berlin is not something I know."]
    choice_regex = "(" + "|".join(o.replace(".", "\\.") for o in options) + ")"
    for option in options:  # whatever the model is forced to pick, the caller learns nothing from the guard
        out, _ = await _answer(guards, option, caller_texts=("Pick one.", choice_regex))
        assert out == option
    out, _ = await _answer(guards, SECRET + " ")  # not dictated by the caller: withheld
    assert out.startswith(WITHHELD)


@pytest.mark.parametrize("text", ["\ud800", "hello \udfff world", "mail jo@example.com \ud83d please"])
async def test_lone_surrogates_never_make_a_check_raise(pipeline, text):
    result = await pipeline.check_input(text)
    assert not any(v.error for v in result.verdicts), [v.reason for v in result.verdicts if v.error]
    result.text.encode("utf-8")
    _out, stream = await _answer(pipeline, text + ". ")
    assert not any(v.error for v in stream.verdicts)
