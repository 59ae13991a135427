"""Carafe's validation and InstructLab's TaxonomyParser(schema_version=0) agree file by file."""

from __future__ import annotations

from carafe.tuning.upstream import compare
from carafe.tuning.validate import validate_taxonomy
from tests.tuning.taxo import CORPUS_TAXONOMY, copy_corpus


def test_same_verdict_as_instructlab_on_every_corpus_file():
    verdicts = compare(CORPUS_TAXONOMY)
    assert len(verdicts) == 14
    disagree = [(v.file, v.upstream_errors, v.carafe_errors) for v in verdicts if not v.agree]
    assert not disagree
    accepted = {v.file for v in verdicts if v.carafe_ok}
    assert accepted == {v.file for v in verdicts if "/invalid/" not in v.file}
    # Carafe's messages carry file, line, rule and a fix on top of the shared verdict.
    few = next(v for v in verdicts if "too_few_seeds" in v.file)
    assert few.carafe_errors == [
        f"{few.file}:4: [schema.minItems] seed_examples: needs at least 5 items "
        "(fix: add examples: skills need at least 5 seed_examples, knowledge 5 contexts with 3 Q&A each)"
    ]


def test_old_versions_are_warnings_that_name_the_upgrade(tmp_path):
    report = validate_taxonomy(copy_corpus(tmp_path))
    assert report.ok, [str(i) for i in report.issues if i.severity == "error"]
    assert {r.leaf: r.version for r in report.recipes} == {
        "compositional_skills/writing/freeform/haiku": 1,
        "compositional_skills/extraction/receipt/total": 1,
        "compositional_skills/linguistics/synonyms": 2,
        "compositional_skills/grounded/linguistics/inclusion": 3,
        "foundational_skills/reasoning/odd_one_out": 1,
        "knowledge/science/animals/birds/chickadee": 3,
    }
    warned = {i.file.split("taxonomy/", 1)[1]: i for i in report.issues if i.rule == "version-deprecated"}
    haiku = warned["compositional_skills/writing/freeform/haiku/qna.yaml"]
    assert haiku.severity == "warning" and "no `version` key, so it is read as version 1" in haiku.message
    assert "carafe taxonomy convert" in haiku.hint and "version 3" in haiku.hint
    assert "is version 2" in warned["compositional_skills/linguistics/synonyms/qna.yaml"].message
    # v1 is not linted upstream: its trailing spaces are a warning here, not an error.
    assert any(i.rule == "trailing-spaces" and i.severity == "warning" for i in report.issues)


def test_a_remote_document_repo_validates_without_the_network(tmp_path):
    report = validate_taxonomy(copy_corpus(tmp_path) / "knowledge/science/animals/birds/chickadee/qna.yaml")
    assert report.ok and report.recipes[0].document["repo"].startswith("https://")
