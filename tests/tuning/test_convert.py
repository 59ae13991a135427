"""`carafe taxonomy convert`: v1/v2 skills become v3 with every comment and line kept."""

from __future__ import annotations

import shutil

from typer.testing import CliRunner

from carafe.cli.main import app
from carafe.tuning.convert import convert_recipe
from carafe.tuning.validate import validate_taxonomy
from tests.tuning.taxo import CORPUS_TAXONOMY, copy_corpus

HAIKU = "compositional_skills/writing/freeform/haiku"


def test_v1_without_version_gets_the_key_and_keeps_its_comment(tmp_path):
    taxonomy = copy_corpus(tmp_path)
    path = taxonomy / HAIKU / "qna.yaml"
    before = path.read_text()
    done = convert_recipe(path, HAIKU)
    assert done.ok and done.changed and done.from_version == 1
    after = path.read_text()
    assert after == before.replace("created_by:", "version: 3\ncreated_by:", 1)
    assert after.startswith("# A v1 skill")
    report = validate_taxonomy(path)
    assert (
        report.ok
        and report.recipes[0].version == 3
        and not [i for i in report.issues if i.rule == "version-deprecated"]
    )


def test_v2_version_is_rewritten_in_place(tmp_path):
    path = copy_corpus(tmp_path) / "compositional_skills/linguistics/synonyms/qna.yaml"
    before = path.read_text()
    assert convert_recipe(path, "compositional_skills/linguistics/synonyms").ok
    assert path.read_text() == before.replace("version: 2\n", "version: 3\n")


def test_what_v3_would_reject_is_reported_and_the_file_left_alone(tmp_path):
    leaf = tmp_path / "compositional_skills/few"
    leaf.mkdir(parents=True)
    text = "created_by: me\ntask_description: Three seeds are enough for v1.\nseed_examples:\n" + "".join(
        f"  - question: Q{i}?\n    answer: A{i}.\n" for i in range(3)
    )
    (leaf / "qna.yaml").write_text(text)
    done = convert_recipe(leaf / "qna.yaml", "compositional_skills/few")
    assert not done.ok and [i.rule for i in done.remaining if i.severity == "error"] == ["schema.minItems"]
    assert (leaf / "qna.yaml").read_text() == text


def test_old_knowledge_is_refused_with_what_v3_needs(tmp_path):
    shutil.copytree(CORPUS_TAXONOMY / "knowledge/invalid/v1_knowledge", tmp_path / "knowledge/old")
    done = convert_recipe(tmp_path / "knowledge/old/qna.yaml", "knowledge/old")
    assert not done.ok and "document_outline" in (done.refused or "") and "5 document contexts" in (done.refused or "")


def test_cli_dry_run_then_convert(tmp_path):
    taxonomy = copy_corpus(tmp_path)
    runner = CliRunner()
    before = {p: p.read_text() for p in taxonomy.rglob("qna.yaml")}
    dry = runner.invoke(app, ["taxonomy", "convert", str(taxonomy), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would convert" in dry.output and {p: p.read_text() for p in before} == before
    result = runner.invoke(app, ["taxonomy", "convert", str(taxonomy)])
    assert result.exit_code == 0 and "4 converted, 0 not, 2 already current" in result.output
    report = validate_taxonomy(taxonomy)
    assert report.ok and {r.version for r in report.recipes} == {3}
