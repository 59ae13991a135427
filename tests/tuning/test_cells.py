"""The four cells' arithmetic (issue 30, item 3) on a tiny fixture, and the gate that uses them."""

from __future__ import annotations

from carafe.tuning.cells import CELLS, Question, carries, cell_metrics, read_heldout, run_cells, seed_key_facts
from carafe.tuning.config import GateConfig
from carafe.tuning.documents import Chunk
from carafe.tuning.evaluate import apply_gate
from carafe.tuning.validate import validate_taxonomy
from tests.tuning.taxo import copy_example

QUESTIONS = [
    Question("k", "How many vacation days?", "27 days.", ["27"], "seed"),
    Question("k", "Which room is the HR desk in?", "Room B-214.", ["B-214"], "document"),
    Question("k", "When is the desk open?", "Tuesday to Thursday.", ["Tuesday", "Thursday"], "document"),
    Question("k", "What is the bike scheme called?", "PedalPlus.", ["PedalPlus"], "document"),
]
CHUNK = Chunk("doc.md#0", "27 days. Room B-214. Tuesday to Thursday. PedalPlus.")


def _answer(questions, systems, adapter):
    """Base knows nothing; the adapter knows the first two facts; RAG gives every fact but Thursday."""
    out = []
    for i, s in enumerate(systems):
        known = {0: "27 days", 1: "room B-214"} if adapter else {}
        text = known.get(i, "I do not know")
        if s:
            text += " | " + {0: "27", 1: "b-214", 2: "Tuesday", 3: "PedalPlus"}[i]
        out.append(text)
    return out


def test_four_cells_count_answers_carrying_every_key_fact():
    items = run_cells(QUESTIONS, _answer, lambda q: [CHUNK], lambda chunks: "ctx")
    m = cell_metrics(items)
    assert m["questions"] == 4
    assert (m["base"], m["adapter"], m["base+rag"], m["adapter+rag"]) == (0.0, 0.5, 0.75, 0.75)
    assert m["seed"] == {"base": 0.0, "adapter": 1.0, "base+rag": 1.0, "adapter+rag": 1.0, "questions": 1}
    assert m["document"]["questions"] == 3 and m["document"]["adapter"] == round(1 / 3, 4)
    assert set(items[0].answers) == set(CELLS)


def test_key_facts_match_whole_values_only():
    assert carries("It is 1,200 euros", ["1200"]) and carries("Room b-214", ["B-214"])
    assert not carries("Room B-2145", ["B-214"]) and not carries("It takes 270 days", ["27"])
    assert not carries("Tuesday only", ["Tuesday", "Thursday"])
    assert seed_key_facts("How large is the Acme wellness budget?", "The wellness budget is 640 euros per year.") == [
        "640"
    ]


def test_the_gate_refuses_an_adapter_that_does_not_beat_rag_alone():
    metrics = {
        "base": {"perplexity": 10.0},
        "adapter": {"perplexity": 10.1},
        "cells": {"questions": 20, "base": 0.0, "adapter": 0.1, "base+rag": 0.4, "adapter+rag": 0.35},
    }
    failed = apply_gate(metrics, GateConfig())["failed"]
    assert failed == ["adapter + RAG key-fact accuracy 35% is -5 points from base + RAG 40% (needs +0)"]
    gate = GateConfig(min_rag_gain=0.15, min_adapter_accuracy=0.6)
    metrics["cells"]["adapter+rag"] = 0.6
    assert apply_gate(metrics, gate)["failed"] == ["adapter key-fact accuracy 10% < 60%"]  # +20 points passes


def test_held_out_files_are_read_and_never_taken_for_recipes(tmp_path):
    taxonomy = copy_example(tmp_path)
    report = validate_taxonomy(taxonomy)
    assert report.ok and len(report.recipes) == 2  # carafe.heldout.yaml is not a recipe file
    questions = read_heldout("knowledge/acme/benefits", taxonomy / "knowledge/acme/benefits")
    assert len(questions) >= 12 and all(q.key_facts and q.source == "document" for q in questions)


def test_the_rag_cells_questions_and_retrieval_come_from_the_recipe(tmp_path):
    from carafe.tuning.documents import DocumentSource, chunk_documents
    from carafe.tuning.evaluate import KnowledgeEval

    taxonomy = copy_example(tmp_path)
    recipes = validate_taxonomy(taxonomy).recipes
    k = KnowledgeEval.of(recipes, 3, lambda r: chunk_documents(DocumentSource().read(r), 60))
    sources = {q.source for q in k.questions}
    assert sources == {"seed", "document"} and all(q.key_facts for q in k.questions)
    assert not any(q.leaf.startswith("compositional_skills") for q in k.questions)
    scores = k._scorer()("Which room is the HR desk in?")  # no encoder given: shared words
    best = k.chunks[max(range(len(scores)), key=scores.__getitem__)][1]
    assert "B-214" in best.text
