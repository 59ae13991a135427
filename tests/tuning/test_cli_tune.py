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
    summary = json.loads(first.stdout[first.stdout.index("{"):])
    assert summary["reused"] is False and summary["samples"] > 0
    assert {r["leaf"] for r in summary["reports"]} == {"compositional_skills/hr/desk_style", "knowledge/acme/benefits"}
    assert (tmp_path / "data" / "tuning" / "data" / "train.jsonl").is_file()
    second = runner.invoke(app, args)
    assert json.loads(second.stdout[second.stdout.index("{"):])["reused"] is True

    result = runner.invoke(app, ["tune", "publish", "--taxonomy", str(taxonomy)])
    assert result.exit_code == 1 and "tune train" in result.output


def test_generate_refuses_an_invalid_taxonomy(tmp_path, teacher_url, monkeypatch):
    monkeypatch.setenv("CARAFE_DATA_DIR", str(tmp_path / "data"))
    taxonomy = copy_example(tmp_path)
    qna = taxonomy / "compositional_skills/hr/desk_style/qna.yaml"
    qna.write_text(qna.read_text().replace("version: 3", "version: 7"))
    result = CliRunner().invoke(app, ["tune", "generate", "--taxonomy", str(taxonomy), "--teacher", teacher_url])
    assert result.exit_code == 1 and "unknown schema version 7" in result.output and "desk_style" in result.output
