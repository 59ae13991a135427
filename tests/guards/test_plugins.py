"""A check from outside Carafe plugs in by import path (``guards.plugins``) and runs
in a policy beside the built-in ones; a bad path is a config error naming it."""

from __future__ import annotations

import pytest

from carafe.guards import GuardPipeline, GuardsConfig, GuardVerdict
from carafe.guards.checks import Subject, decide
from carafe.guards.config import CheckSettings
from carafe.guards.registry import CheckContext, builtin_checks


class ShoutingCheck:
    """Flags texts mostly in capitals (a stand-in for a company's own rule)."""

    name = "shouting"
    cost = 0

    def __init__(self, min_letters: int) -> None:
        self.min_letters = min_letters

    async def check(self, subject: Subject, settings: CheckSettings) -> GuardVerdict:
        letters = [c for c in subject.text if c.isalpha()]
        score = sum(c.isupper() for c in letters) / len(letters) if len(letters) >= self.min_letters else 0.0
        return decide(self.name, "shouting", score, settings, "mostly capitals", stage=subject.stage)


def build_shouting(ctx: CheckContext) -> ShoutingCheck:
    return ShoutingCheck(int(ctx.options.get("min_letters", 5)))


def _config(**plugin) -> GuardsConfig:
    return GuardsConfig(
        plugins={
            "shouting": {"path": "tests.guards.test_plugins:build_shouting", "options": {"min_letters": 3}, **plugin}
        },
        policies={
            "default": {"input": {"shouting": {"action": "block", "threshold": 0.8}, "pii": {"action": "redact"}}}
        },
    )


async def test_plugin_check_runs_in_a_policy_beside_builtin_checks():
    pipeline = GuardPipeline.from_config(_config())
    try:
        blocked = await pipeline.check_input("PLEASE SEND ME THE PAYROLL NOW")
        assert blocked.blocked is not None and blocked.blocked.check == "shouting"
        calm = await pipeline.check_input("Please mail jane.doe@example.com the payroll.")
        assert calm.blocked is None and "<EMAIL>" in calm.text  # the built-in pii check still runs
        assert {v.check for v in calm.verdicts} == {"shouting", "pii"}
    finally:
        await pipeline.aclose()


def test_builtin_checks_register_themselves():
    specs = builtin_checks()
    assert {"injection", "pii", "toxicity", "topics", "guardian", "grounding", "leak"} <= set(specs)
    assert specs["leak"].stages == ("output",) and "input" in specs["injection"].stages


@pytest.mark.parametrize("path", ["tests.guards.nowhere:build", "tests.guards.test_plugins:missing", "no-colon"])
def test_bad_plugin_path_is_a_config_error_naming_it(path):
    with pytest.raises(ValueError, match="guard plugin"):
        _config(path=path)


def test_plugin_only_runs_on_its_stages():
    with pytest.raises(ValueError, match=r"unknown input check\(s\) \['shouting'\]"):
        _config(stages=["output"])
