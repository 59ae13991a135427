"""Taxonomy validation: every bad input names file, line, rule and a fix."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from carafe.cli.main import app
from carafe.tuning.validate import validate_taxonomy
from tests.tuning.taxo import copy_example, git, skill_yaml, write_leaf

LEAF = "compositional_skills/test/leaf"


def _only_issue(taxonomy: Path):
    report = validate_taxonomy(taxonomy)
    assert not report.ok
    return report.issues


def test_example_taxonomy_is_valid(tmp_path):
    report = validate_taxonomy(copy_example(tmp_path))
    assert report.ok, [str(i) for i in report.issues]
    kinds = {r.leaf: r.kind for r in report.recipes}
    assert kinds == {"compositional_skills/hr/desk_style": "style", "knowledge/acme/benefits": "knowledge"}
    style = next(r for r in report.recipes if r.kind == "style")
    assert style.sidecar.signoff == "Kind regards, the Acme HR Desk"
    assert len(style.sha256) == 64


def test_invalid_yaml_names_line_and_rule(tmp_path):
    write_leaf(tmp_path, LEAF, "version: 3\ncreated_by: a\n  bad: indent\ntask_description: x\n")
    issues = _only_issue(tmp_path)
    assert any(i.rule == "syntax" and i.line == 3 and i.file.endswith("qna.yaml") for i in issues)


def test_wrong_schema_version(tmp_path):
    write_leaf(tmp_path, LEAF, skill_yaml(version=99))
    issues = _only_issue(tmp_path)
    assert [i.rule for i in issues] == ["version"]
    assert issues[0].line == 1 and "version: 3" in issues[0].hint


def test_fewer_than_five_seeds(tmp_path):
    write_leaf(tmp_path, LEAF, skill_yaml(n=4))
    issues = _only_issue(tmp_path)
    assert any(i.rule == "schema.minItems" and "seed_examples" in i.message and i.line == 4 for i in issues)


def test_trailing_spaces_and_final_newline(tmp_path):
    text = skill_yaml().replace("A test skill.", "A test skill.   ").rstrip("\n")
    write_leaf(tmp_path, LEAF, text)
    rules = {(i.rule, i.line) for i in _only_issue(tmp_path)}
    assert ("trailing-spaces", 3) in rules
    assert any(r == "new-line-at-end-of-file" for r, _ in rules)


def test_duplicate_keys(tmp_path):
    write_leaf(tmp_path, LEAF, skill_yaml().replace("created_by: tester\n", "created_by: tester\ncreated_by: other\n"))
    assert any(i.rule == "key-duplicates" and i.line == 3 for i in _only_issue(tmp_path))


def test_wrong_file_name(tmp_path):
    write_leaf(tmp_path, LEAF, skill_yaml(), name="qna.yml")
    issues = _only_issue(tmp_path)
    assert issues[0].rule == "file-name" and "qna.yaml" in issues[0].hint


def test_missing_document_path(tmp_path):
    taxonomy = copy_example(tmp_path)
    qna = taxonomy / "knowledge/acme/benefits/qna.yaml"
    qna.write_text(qna.read_text().replace("../../../documents", "../../../no_such_docs"))
    issues = _only_issue(taxonomy)
    assert [i.rule for i in issues] == ["document"]
    assert "knowledge/acme/benefits" in issues[0].message and "no_such_docs" in issues[0].message
    assert issues[0].line == 6


def test_document_commit_not_in_repo(tmp_path):
    taxonomy = copy_example(tmp_path)
    docs = taxonomy / "documents"
    git(docs, "init", "-q")
    git(docs, "add", ".")
    git(docs, "commit", "-qm", "docs")
    head = git(docs, "rev-parse", "HEAD")
    qna = taxonomy / "knowledge/acme/benefits/qna.yaml"
    qna.write_text(qna.read_text().replace("e383d65cea9bb76ae05d7f81bb10168789522872", f"'{head}'"))
    assert validate_taxonomy(taxonomy).ok
    qna.write_text(qna.read_text().replace(head, "0" * 40))
    issues = _only_issue(taxonomy)
    assert (
        issues[0].rule == "document"
        and "0" * 40 in issues[0].message
        and "not in the document repo" in issues[0].message
    )


def test_cli_exit_code_and_json(tmp_path):
    runner = CliRunner()
    good = copy_example(tmp_path / "good")
    assert runner.invoke(app, ["taxonomy", "validate", str(good)]).exit_code == 0
    write_leaf(tmp_path / "bad", LEAF, skill_yaml(n=2))
    result = runner.invoke(app, ["taxonomy", "validate", str(tmp_path / "bad"), "--json"])
    assert result.exit_code == 1
    assert '"schema.minItems"' in result.output
