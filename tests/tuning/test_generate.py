"""Synthetic data generation against a real HTTP teacher: samples, provenance, drops, resume, bad teachers."""

from __future__ import annotations

import json

import pytest

from carafe.tuning.config import TeacherConfig, TuningConfig
from carafe.tuning.errors import EmptyLeaf, TeacherUnavailable
from carafe.tuning.filters import Candidate, DropReport, judge_filter, length_filter
from carafe.tuning.generate import estimate, generate_leaves, leaf_slug, write_dataset
from carafe.tuning.teacher import OpenAITeacher
from carafe.tuning.template_teacher import TemplateTeacher
from carafe.tuning.validate import validate_taxonomy
from tests.servers import free_port
from tests.tuning.taxo import copy_example


@pytest.fixture
def recipes(tmp_path):
    return validate_taxonomy(copy_example(tmp_path)).recipes


def _cfg(url: str | None = None, retries: int = 1) -> TuningConfig:
    return TuningConfig(teacher=TeacherConfig(endpoint=url, retries=retries, timeout_s=5))


async def test_generates_samples_with_provenance_and_drop_report(recipes, teacher_url, tmp_path):
    cfg = _cfg(teacher_url)
    results = await generate_leaves(recipes, cfg, OpenAITeacher(cfg.teacher), tmp_path / "gen")
    by_leaf = {r.leaf: r for r in results}
    style = by_leaf["compositional_skills/hr/desk_style"]
    assert style.phase == "skills" and len(style.samples) > 20
    assert all(s["messages"][-1]["content"].endswith("Kind regards, the Acme HR Desk") for s in style.samples)
    # The template teacher repeats requests: the exact-duplicate filter must catch and report them.
    assert style.report.dropped["exact_duplicate"] > 0
    assert style.report.kept == style.report.generated - sum(style.report.dropped.values())
    knowledge = by_leaf["knowledge/acme/benefits"]
    prov = next(s["provenance"] for s in knowledge.samples if s["provenance"]["stage"] != "seed")
    assert prov["leaf"] == "knowledge/acme/benefits" and len(prov["recipe_sha256"]) == 64
    assert prov["teacher"].startswith("teacher@http://127.0.0.1") and prov["chunk"].startswith("acme_benefits.md#")
    assert set(prov["scores"]) == {"faithfulness", "relevance", "quality"}
    report = json.loads((tmp_path / "gen" / leaf_slug(knowledge.leaf) / "report.json").read_text())
    assert report["generated"] > 0 and report["kept"] > 0
    sha, n = write_dataset(results, tmp_path / "train.jsonl")
    assert n == len(style.samples) + len(knowledge.samples) and len(sha) == 64


async def test_held_out_seeds_never_reach_the_data(recipes, tmp_path):
    cfg = _cfg("template")
    results = await generate_leaves(recipes, cfg, TemplateTeacher(), tmp_path)
    questions = {m["content"] for r in results for s in r.samples for m in s["messages"] if m["role"] == "user"}
    for r in recipes:
        for seed in r.split_seeds(cfg.generation.holdout_seeds)[1]:
            assert not any(seed.question in q for q in questions), seed.question


class _FlakyTeacher(TemplateTeacher):
    """Stops answering after `fail_after` calls, like a teacher that goes down mid-run."""

    def __init__(self, fail_after: int | None) -> None:
        super().__init__()
        self.calls, self.fail_after = 0, fail_after

    async def complete(self, messages):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise TeacherUnavailable("teacher flaky went away")
        self.calls += 1
        return self.answer(messages)


async def test_resume_after_interruption_reuses_answers(recipes, tmp_path):
    cfg = _cfg("template", retries=0)
    cfg.teacher.concurrency = 1
    full = _FlakyTeacher(None)
    reference = await generate_leaves(recipes, cfg, full, tmp_path / "ref")
    with pytest.raises(TeacherUnavailable, match="run again to resume"):
        await generate_leaves(recipes, cfg, _FlakyTeacher(10), tmp_path / "run")
    units = sum(len(p.read_text().splitlines()) for p in (tmp_path / "run").rglob("units.jsonl"))
    assert units == 10
    resumed = _FlakyTeacher(None)
    results = await generate_leaves(recipes, cfg, resumed, tmp_path / "run")
    assert resumed.calls == full.calls - 10
    assert [r.samples for r in results] == [r.samples for r in reference]


async def test_teacher_down_is_a_clear_error(recipes, tmp_path):
    cfg = _cfg(f"http://127.0.0.1:{free_port()}/v1", retries=1)
    with pytest.raises(TeacherUnavailable) as info:
        await generate_leaves(recipes[:1], cfg, OpenAITeacher(cfg.teacher), tmp_path)
    assert recipes[0].leaf in info.value.message and "cannot be reached" in info.value.message


async def test_junk_teacher_empties_the_leaf_with_the_stage_named(recipes, junk_teacher_url, tmp_path):
    cfg = _cfg(junk_teacher_url, retries=1)
    knowledge = [r for r in recipes if r.is_knowledge]
    with pytest.raises(EmptyLeaf) as info:
        await generate_leaves(knowledge, cfg, OpenAITeacher(cfg.teacher), tmp_path)
    assert "knowledge/acme/benefits" in info.value.message and "format" in info.value.message


def test_estimate_before_starting(recipes):
    rows = {r["leaf"]: r for r in estimate(recipes, TuningConfig())}
    assert (
        rows["knowledge/acme/benefits"]["teacher_calls"] > 0
        and rows["compositional_skills/hr/desk_style"]["samples"] > 0
    )


def test_length_and_judge_filters_report_why():
    cfg = TuningConfig().filters
    report = DropReport("leaf")
    cands = [
        Candidate("A real question?", "ok", "skill"),
        Candidate(
            "A real question?",
            "A fine, long answer.",
            "skill",
            scores={"faithfulness": 2, "relevance": 5, "quality": 5},
        ),
        Candidate(
            "Another question?",
            "Another fine answer.",
            "skill",
            scores={"faithfulness": 5, "relevance": 4, "quality": 4},
        ),
    ]
    kept = judge_filter(length_filter(cands, cfg, report), cfg, report)
    assert [c.question for c in kept] == ["Another question?"]
    assert report.dropped == {"length": 1, "judge": 1} and "faithfulness=2" in report.reasons["judge"][0]


def test_near_duplicates_by_embedding():
    from carafe.indexer.embedding import Embedder
    from carafe.tuning.filters import near_dedup

    cfg = TuningConfig().filters.model_copy(update={"near_duplicate": 0.9})
    report = DropReport("leaf")
    cands = [
        Candidate("How many vacation days do I get?", "27 days.", "k"),
        Candidate("How many vacation days do I get ?", "27 days.", "k"),
        Candidate("Where is the HR desk?", "In room B-214.", "k"),
    ]
    kept = near_dedup(cands, cfg, report, Embedder().encode)
    assert [c.question for c in kept] == ["How many vacation days do I get?", "Where is the HR desk?"]
    assert report.dropped["near_duplicate"] == 1


async def test_raft_samples_use_the_gateways_numbered_context_prompt(recipes, tmp_path):
    from carafe.indexer.prompt import Passage, rag_system_prompt
    from carafe.tuning.raft import NO_ANSWER

    cfg = _cfg("template")
    cfg.generation.raft_share, cfg.generation.raft_no_answer_share = 1.0, 0.3
    knowledge = [r for r in recipes if r.is_knowledge]
    [result] = await generate_leaves(knowledge, cfg, TemplateTeacher(), tmp_path)
    raft = [s for s in result.samples if s["provenance"]["stage"] == "raft"]
    no_answer = [s for s in result.samples if s["provenance"]["stage"] == "raft_no_answer"]
    assert raft and no_answer
    system, _user, assistant = (m["content"] for m in raft[0]["messages"])
    # The same function the gateway uses renders the passages; the header comes out identical.
    header = rag_system_prompt([Passage(doc_id="d", title="t", version="1", chunk=0, text="PASSAGE")], None).split(
        "PASSAGE"
    )[0][:40]
    assert system.startswith(header)
    cited = int(assistant.rsplit("[", 1)[1].rstrip("]"))
    assert f"[{cited}]" in system and 1 <= cited <= cfg.generation.raft_distractors + 1
    assert all(s["messages"][-1]["content"] == NO_ANSWER for s in no_answer)


async def test_community_format_leaves_all_produce_data(tmp_path):
    """v1 and v2 skills, a v1 grounded skill, a v3 grounded skill, v3 knowledge with a mirrored remote document."""
    from carafe.tuning.documents import DocumentSource
    from tests.tuning.taxo import CORPUS_DOC_URL, CORPUS_MIRROR, copy_corpus

    recipes = validate_taxonomy(copy_corpus(tmp_path)).recipes
    cfg = _cfg("template")
    cfg.document_mirrors = {CORPUS_DOC_URL: CORPUS_MIRROR}
    cfg.filters.judge = False  # the rule-based stand-in teacher judges HR answers only
    results = await generate_leaves(
        recipes, cfg, TemplateTeacher(), tmp_path / "gen", docs=DocumentSource(cfg.document_mirrors)
    )
    by_leaf = {r.leaf: r for r in results}
    assert set(by_leaf) == {r.leaf for r in recipes} and len(by_leaf) == 6
    for r in results:
        assert r.report.kept > 0 and any(s["provenance"]["stage"] != "seed" for s in r.samples), r.leaf
    grounded = by_leaf["compositional_skills/extraction/receipt/total"]  # a v1 seed with context stays grounded
    assert {s["provenance"]["stage"] for s in grounded.samples} >= {"seed", "grounded_skill"}
    knowledge = by_leaf["knowledge/science/animals/birds/chickadee"]
    assert knowledge.phase == "knowledge"
    assert {s["provenance"]["chunk"].split("#")[0] for s in knowledge.samples if "chunk" in s["provenance"]} == {
        "chickadee.md"
    }
    assert estimate(recipes, cfg)[-1]["teacher_calls"] > 0  # the estimate reads the mirror too
