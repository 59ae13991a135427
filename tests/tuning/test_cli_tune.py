"""`carafe tune`: generate with a real HTTP teacher, stage reuse by content hash, clear errors for missing stages."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from carafe.cli.main import app
from tests.tuning.taxo import copy_example


@pytest.mark.slow
def test_generate_json_then_reuse_and_missing_stages(tmp_path, teacher_url, monkeypatch):
    monkeypatch.setenv("CARAFE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CARAFE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    taxonomy = copy_example(tmp_path)
    runner = CliRunner()
    args = ["tune", "generate", "--taxonomy", str(taxonomy), "--teacher", teacher_url, "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout[first.stdout.index("{") :])
    assert summary["reused"] is False and summary["samples"] > 0
    assert {r["leaf"] for r in summary["reports"]} == {"compositional_skills/hr/desk_style", "knowledge/acme/benefits"}
    assert (tmp_path / "data" / "tuning" / "data" / "train.jsonl").is_file()
    second = runner.invoke(app, args)
    assert json.loads(second.stdout[second.stdout.index("{") :])["reused"] is True

    result = runner.invoke(app, ["tune", "publish", "--taxonomy", str(taxonomy)])
    assert result.exit_code == 1 and "tune train" in result.output


def test_generate_refuses_an_invalid_taxonomy(tmp_path, teacher_url, monkeypatch):
    monkeypatch.setenv("CARAFE_DATA_DIR", str(tmp_path / "data"))
    taxonomy = copy_example(tmp_path)
    qna = taxonomy / "compositional_skills/hr/desk_style/qna.yaml"
    qna.write_text(qna.read_text().replace("version: 3", "version: 7"))
    result = CliRunner().invoke(app, ["tune", "generate", "--taxonomy", str(taxonomy), "--teacher", teacher_url])
    assert result.exit_code == 1 and "unknown schema version 7" in result.output and "desk_style" in result.output


def test_generate_on_community_leaves_with_a_document_mirror(tmp_path, monkeypatch):
    from tests.tuning.taxo import CORPUS_DOC_URL, CORPUS_MIRROR, copy_corpus

    monkeypatch.setenv("CARAFE_DATA_DIR", str(tmp_path / "data"))
    taxonomy = copy_corpus(tmp_path)
    config = tmp_path / "carafe.yaml"
    config.write_text(
        f"tuning:\n  filters: {{near_duplicate: 1.0, judge: false}}\n  document_mirrors:\n    {CORPUS_DOC_URL}: "
        f"{CORPUS_MIRROR}\n"
    )
    args = ["tune", "generate", "--config", str(config), "--taxonomy", str(taxonomy), "--teacher", "template", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    kept = {r["leaf"]: r["kept"] for r in summary["reports"]}
    assert len(kept) == 6 and all(n > 0 for n in kept.values()), kept
    assert summary["by_phase"]["knowledge"] > 0 and summary["by_phase"]["skills"] > 0

    config.write_text(
        config.read_text().replace(str(CORPUS_MIRROR), str(tmp_path / "gone"))
    )  # the message says what to do
    result = CliRunner().invoke(app, [*args, "--force"])
    said = " ".join(result.output.split())  # the console wraps long lines
    assert result.exit_code == 1 and f"the mirror of {CORPUS_DOC_URL} configured in tuning.document_mirrors" in said
    assert f"does not exist; clone it there (git clone {CORPUS_DOC_URL}" in said
