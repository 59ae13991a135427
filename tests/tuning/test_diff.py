"""`taxonomy diff`: leaves changed since the merge-base, plus untracked ones."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from carafe.cli.main import app
from carafe.tuning.diff import NotAGitTaxonomy, changed_leaves
from tests.tuning.taxo import git, skill_yaml, write_leaf


@pytest.fixture
def repo(tmp_path):
    git(tmp_path, "init", "-q", "-b", "main")
    write_leaf(tmp_path, "compositional_skills/old", skill_yaml())
    write_leaf(tmp_path, "compositional_skills/touched", skill_yaml())
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "base")
    git(tmp_path, "checkout", "-qb", "feature")
    return tmp_path


def test_committed_modified_and_untracked_leaves(repo):
    write_leaf(repo, "knowledge/committed", skill_yaml())
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "add")
    (repo / "compositional_skills/touched/qna.yaml").write_text(skill_yaml(6))  # uncommitted edit
    write_leaf(repo, "compositional_skills/untracked", skill_yaml())
    write_leaf(repo, "compositional_skills/untracked", "not a leaf", name="notes.md")
    got = [p.relative_to(repo).as_posix() for p in changed_leaves(repo, "main")]
    assert got == [
        "compositional_skills/touched/qna.yaml",
        "compositional_skills/untracked/qna.yaml",
        "knowledge/committed/qna.yaml",
    ]


def test_no_changes(repo):
    assert changed_leaves(repo, "main") == []


def test_unknown_base_and_not_a_repo(repo, tmp_path_factory):
    with pytest.raises(NotAGitTaxonomy, match="--base"):
        changed_leaves(repo, "no-such-branch")
    with pytest.raises(NotAGitTaxonomy, match="not inside a git repository"):
        changed_leaves(tmp_path_factory.mktemp("plain"), "main")


def test_cli_json(repo):
    write_leaf(repo, "compositional_skills/new", skill_yaml())
    result = CliRunner().invoke(app, ["taxonomy", "diff", str(repo), "--base", "main", "--json"])
    assert result.exit_code == 0, result.output
    assert '"compositional_skills/new/qna.yaml"' in result.output
