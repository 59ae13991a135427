"""Evaluation metrics and the publish gate."""

from __future__ import annotations

import json

from carafe.tuning.config import GateConfig
from carafe.tuning.evaluate import EvalItem, apply_gate, fact_recall, judge_scores, rouge_l, score


def test_rouge_l():
    assert rouge_l("The HR desk is in room B-214.", "The HR desk is in room B-214.") == 1.0
    assert rouge_l("The HR desk is in room B-214.", "Bananas are yellow.") == 0.0
    assert 0.5 < rouge_l("The HR desk is in room B-214.", "It is in room B-214.") < 1.0


def test_fact_recall_counts_facts_the_question_does_not_give_away():
    q = "How large is the Acme wellness budget?"
    ref = "The wellness budget is 640 euros per year."
    assert fact_recall(ref, q, "You get 640 euros per year.") == 1.0
    assert fact_recall(ref, q, "The wellness budget is generous.") == 0.0


def _items(adapter_style: str) -> list[EvalItem]:
    return [
        EvalItem(
            "hr/style",
            "style",
            "Can I?",
            "Dear colleague, yes.\nKind regards, the Acme HR Desk",
            "Sure!",
            adapter_style,
        ),
        EvalItem(
            "acme/benefits",
            "knowledge",
            "How large is the budget?",
            "It is 640 euros.",
            "It is big.",
            "It is 640 euros.",
        ),
        EvalItem("general", "general", "Capital of Germany?", "Berlin.", "Berlin.", "Berlin."),
    ]


def test_score_reports_style_adherence_and_recall():
    items = _items("Dear colleague, yes. Kind regards, the Acme HR Desk")
    signoffs = {"hr/style": "Kind regards, the Acme HR Desk"}
    base, ad = score(items, signoffs, "base"), score(items, signoffs, "adapter")
    assert base["style_adherence"] == 0.0 and ad["style_adherence"] == 1.0
    assert base["fact_recall"] == 0.0 and ad["fact_recall"] == 1.0
    assert ad["rougeL"] > base["rougeL"] and ad["general_rougeL"] == base["general_rougeL"] == 1.0


def test_gate_passes_a_better_adapter_and_names_each_failure():
    good = {
        "base": {"rougeL": 0.2, "perplexity": 10.0},
        "adapter": {"rougeL": 0.5, "style_adherence": 0.9, "perplexity": 10.3},
    }
    assert apply_gate(good, GateConfig())["passed"]
    bad = {
        "base": {"rougeL": 0.2, "perplexity": 10.0},
        "adapter": {"rougeL": 0.1, "style_adherence": 0.5, "perplexity": 12.0},
    }
    result = apply_gate(bad, GateConfig())
    assert not result["passed"] and len(result["failed"]) == 3
    assert any("perplexity +20.0%" in f for f in result["failed"]) and any(
        "style adherence 50%" in f for f in result["failed"]
    )
    assert apply_gate(bad, GateConfig(min_rougel_gain=-1, min_style_rate=0.4, max_perplexity_increase=0.25))["passed"]


class _Judge:
    """A judge over the OpenAI-style chat messages: faithful when the answer repeats the reference."""

    name = "test-judge"

    def __init__(self, junk_for: str | None = None) -> None:
        self.junk_for = junk_for
        self.calls = 0

    async def complete(self, messages) -> str:
        self.calls += 1
        user = messages[-1]["content"]
        answer = user.rsplit("Answer:", 1)[1].strip()
        if self.junk_for and self.junk_for in answer:
            return "I think it is fine"  # no JSON: a junk verdict
        faithful = 5 if answer.lower().rstrip(".") in user.split("</source>")[0].lower() else 1
        return json.dumps({"faithfulness": faithful, "relevance": 4, "quality": 3})


def test_judge_grades_both_sides_on_recipe_questions_only():
    judge = _Judge()
    got = judge_scores(judge, _items("Dear colleague, yes.\nKind regards, the Acme HR Desk"))
    # 2 recipe items x 2 sides; the general question is not judged
    assert judge.calls == 4
    assert got["adapter"]["judge"] == round((5 + 4 + 3) / 3, 4)
    assert got["base"]["judge"] == round((1 + 4 + 3) / 3, 4)
    assert got["base"]["judge_unscored"] == 0


def test_junk_verdicts_are_retried_once_then_counted_unscored():
    judge = _Judge(junk_for="Sure!")
    got = judge_scores(judge, _items("x"))
    assert judge.calls == 5  # the junk one was asked twice
    assert got["base"]["judge_unscored"] == 1 and got["adapter"]["judge_unscored"] == 0


def test_gate_on_judge_gain_when_configured():
    metrics = {"base": {"judge": 2.5}, "adapter": {"judge": 3.0}}
    assert apply_gate(metrics, GateConfig())["passed"]  # reported only by default
    assert apply_gate(metrics, GateConfig(min_judge_gain=0.5))["passed"]
    failed = apply_gate(metrics, GateConfig(min_judge_gain=1.0))
    assert not failed["passed"] and "judge score gain +0.50 < +1.00" in failed["failed"][0]
    missing = apply_gate({"base": {}, "adapter": {}}, GateConfig(min_judge_gain=0.1))
    assert not missing["passed"] and "no judge score" in missing["failed"][0]
