"""Evaluation metrics and the publish gate."""

from __future__ import annotations

from carafe.tuning.config import GateConfig
from carafe.tuning.evaluate import EvalItem, apply_gate, fact_recall, rouge_l, score


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
        EvalItem("hr/style", "style", "Can I?", "Dear colleague, yes.\nKind regards, the Acme HR Desk", "Sure!", adapter_style),
        EvalItem("acme/benefits", "knowledge", "How large is the budget?", "It is 640 euros.", "It is big.", "It is 640 euros."),
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
    good = {"base": {"rougeL": 0.2, "perplexity": 10.0}, "adapter": {"rougeL": 0.5, "style_adherence": 0.9, "perplexity": 10.3}}
    assert apply_gate(good, GateConfig())["passed"]
    bad = {"base": {"rougeL": 0.2, "perplexity": 10.0}, "adapter": {"rougeL": 0.1, "style_adherence": 0.5, "perplexity": 12.0}}
    result = apply_gate(bad, GateConfig())
    assert not result["passed"] and len(result["failed"]) == 3
    assert any("perplexity +20.0%" in f for f in result["failed"]) and any("style adherence 50%" in f for f in result["failed"])
    assert apply_gate(bad, GateConfig(min_rougel_gain=-1, min_style_rate=0.4, max_perplexity_increase=0.25))["passed"]
