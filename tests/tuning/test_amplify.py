"""The offline generator (issue 30, item 1): atomic facts, many faithful forms per fact, RAFT shapes,
near-duplicates still filtered, and the default teacher when none is configured."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import pytest

from carafe.indexer.prompt import DATA_OPEN, RAG_INSTRUCTIONS
from carafe.tuning.amplify import OfflineTeacher, amplify
from carafe.tuning.config import TeacherConfig, TuningConfig
from carafe.tuning.documents import DocumentSource, chunk_documents
from carafe.tuning.facts import extract_facts, unsupported
from carafe.tuning.filters import Candidate, DropReport, faithful_filter
from carafe.tuning.generate import generate_leaves
from carafe.tuning.raft import NO_ANSWER
from carafe.tuning.teacher import make_teacher
from carafe.tuning.validate import validate_taxonomy
from tests.tuning.taxo import copy_example

LEAF = "knowledge/acme/benefits"
_NAMES_AND_NUMBERS = re.compile(r"\b[A-Z][A-Za-z]*[A-Z0-9][A-Za-z0-9-]*\b|\d[\d,.:]*\d|\d")


def _generate(tmp, encode=None):
    recipe = next(r for r in validate_taxonomy(copy_example(tmp)).recipes if r.leaf == LEAF)
    cfg = TuningConfig()
    chunks = chunk_documents(DocumentSource().read(recipe), cfg.generation.chunk_words)
    [result] = asyncio.run(generate_leaves([recipe], cfg, OfflineTeacher(), tmp / "gen", encode=encode))
    return recipe, chunks, result


@pytest.fixture(scope="module")
def leaf(tmp_path_factory):
    """The example knowledge leaf generated offline (exact-duplicate, length, faithfulness filters)."""
    return _generate(tmp_path_factory.mktemp("amplify"))


def test_facts_are_standalone_sentences_with_their_key_values(leaf):
    _, chunks, _ = leaf
    facts = {f.text: f for f in extract_facts(chunks, "Acme employee benefits")}
    assert "The wellness budget covers gym memberships, yoga classes and running shoes." in facts  # "It covers"
    desk = facts["The HR desk is open from Tuesday to Thursday, 9:00 to 13:00, in room B-214."]
    assert [(s.kind, s.text) for s in desk.spans] == [
        ("days", "Tuesday to Thursday"),
        ("hours", "9:00 to 13:00"),
        ("code", "B-214"),
    ]
    assert [s.text for s in facts["Every Acme employee receives 27 paid vacation days per calendar year."].spans] == [
        "27 paid vacation days"
    ]


def test_every_number_and_name_in_an_answer_is_in_its_source_chunk(leaf):
    _, chunks, result = leaf
    texts = {c.id: c.text for c in chunks}
    checked = 0
    for s in result.samples:
        prov = s["provenance"]
        if prov["stage"] in ("seed", "raft_no_answer"):
            continue
        answer = re.sub(r" \[\d+\]$", "", s["messages"][-1]["content"])  # RAFT's citation marker
        source = texts[prov["chunk"]]
        for token in _NAMES_AND_NUMBERS.findall(answer):
            assert token.lower() in source.lower(), (token, answer, prov["chunk"])
        checked += 1
    assert checked > 200


def _coverage(chunks, result) -> None:
    facts = extract_facts(chunks)
    report = result.report
    assert set(report.per_fact) == {f.id for f in facts} and len(facts) >= 15
    assert min(report.per_fact.values()) >= 20, report.per_fact
    by_fact = Counter(f for s in result.samples for f in s["provenance"].get("facts", []))
    assert min(by_fact[f.id] for f in facts) >= 20  # counted from the samples themselves
    forms = Counter(s["provenance"]["stage"] for s in result.samples)
    assert {"fact_wh", "fact_cloze", "fact_reverse", "fact_yes", "fact_keywords", "rephrase", "raft"} <= set(forms)


def test_every_fact_is_asked_in_many_forms(leaf):
    _, chunks, result = leaf
    _coverage(chunks, result)


@pytest.mark.slow
def test_at_least_twenty_samples_per_fact_after_near_duplicate_filtering(tmp_path):
    """With MiniLM's near-duplicate filter on (what `carafe tune` runs): ~1,200 embeddings, minutes here."""
    from carafe.indexer.embedding import Embedder

    _, chunks, result = _generate(tmp_path, Embedder().encode)
    assert result.report.dropped["near_duplicate"] > 100  # rephrasings too close to others were removed
    _coverage(chunks, result)


def test_question_forms_ask_for_the_value_and_answers_state_it(leaf):
    recipe, chunks, _ = leaf
    cands = [c for c in amplify(recipe, chunks) if c.facts == ("acme_benefits.md#0/0",)]
    questions = {c.question for c in cands}
    assert "How many paid vacation days does every Acme employee receive per calendar year?" in questions
    assert any(q.startswith("Is it true that every Acme employee receives 37 paid") for q in questions)  # a no
    no = next(c for c in cands if "receives 37 paid" in c.question)
    assert no.answer.startswith("No") and "27" in no.answer
    assert all("27" in c.answer for c in cands)


def test_raft_samples_have_gold_and_distractors_or_say_the_passages_lack_it(leaf):
    _, chunks, result = leaf
    texts = {c.id: c.text for c in chunks}
    raft = [s for s in result.samples if s["provenance"]["stage"] == "raft"]
    gone = [s for s in result.samples if s["provenance"]["stage"] == "raft_no_answer"]
    assert raft and gone and len(gone) < len(raft)
    for s in raft + gone:
        system, _user, answer = (m["content"] for m in s["messages"])
        assert [m["role"] for m in s["messages"]] == ["system", "user", "assistant"]
        assert system.startswith(RAG_INSTRUCTIONS) and "\n[1] " in system and "\n[2] " in system
        gold_in = texts[s["provenance"]["chunk"]] in system
        if s["provenance"]["stage"] == "raft":
            n = int(re.search(r"\[(\d+)\]$", answer).group(1))
            cited = system.split(f"\n[{n}] ", 1)[1].split("\n", 1)[1].removeprefix(DATA_OPEN + "\n")
            assert gold_in and cited.startswith(texts[s["provenance"]["chunk"]].strip()[:40])
        else:
            assert not gold_in and answer == NO_ANSWER


def test_the_faithfulness_filter_drops_invented_numbers_and_names():
    source = "Each employee has a wellness budget of 640 euros per year."
    report = DropReport("x")
    kept = faithful_filter(
        [
            Candidate("q1?", "The wellness budget is 640 euros per year.", "knowledge_qa", source=source, chunk="a#0"),
            Candidate("q2?", "The wellness budget is 800 euros per year.", "knowledge_qa", source=source, chunk="a#0"),
            Candidate("q3?", "FitCorp runs the wellness budget.", "knowledge_qa", source=source, chunk="a#0"),
        ],
        report,
    )
    assert [c.question for c in kept] == ["q1?"] and report.dropped["unfaithful"] == 2
    assert unsupported("Yes. The budget is 640 euros.", source) == []


def test_no_endpoint_means_the_offline_generator_not_the_base_model(tmp_path):
    teacher = make_teacher(TeacherConfig(), tmp_path / "models")
    assert isinstance(teacher, OfflineTeacher) and teacher.name == "offline"
