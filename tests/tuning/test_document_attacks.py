"""A recipe is data from a pull request: it may not read the host's files, browse its folders, make it
fetch internal URLs, or smuggle options into git (issue 29, M4), each tried the way the attack run did."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest

from carafe.tuning.config import TuningConfig
from carafe.tuning.documents import DocumentNotFound, DocumentSource
from carafe.tuning.pipeline import Workspace
from carafe.tuning.validate import validate_taxonomy
from tests.tuning.taxo import copy_example, git

LEAF = "knowledge/acme/benefits"


@pytest.fixture
def secrets(tmp_path):
    """A folder outside the taxonomy holding what an attacker wants: the app's .env."""
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "settings.md").write_text("# Settings\n\nDB_PASSWORD=hunter2-prod\n")
    return folder


def _point(taxonomy, repo: str, *, patterns: str = "*.md", commit: str | None = None) -> None:
    qna = taxonomy / LEAF / "qna.yaml"
    text = qna.read_text().replace("repo: ../../../documents", f"repo: '{repo}'")
    text = text.replace("- acme_benefits.md", f"- '{patterns}'")
    if commit is not None:
        text = text.replace("e383d65cea9bb76ae05d7f81bb10168789522872", f"'{commit}'")
    qna.write_text(text)


def _document_issue(taxonomy, **kw):
    report = validate_taxonomy(taxonomy, **kw)
    issues = [i for i in report.issues if i.rule == "document"]
    assert not report.ok and len(issues) == 1, report.issues
    return issues[0]


@pytest.mark.parametrize("form", ["absolute", "file_url", "dotdot", "home"])
def test_a_recipe_cannot_read_a_folder_outside_the_taxonomy(tmp_path, secrets, form):
    taxonomy = copy_example(tmp_path)
    repo = {
        "absolute": str(secrets),
        "file_url": f"file://{secrets}",
        "dotdot": "../../../../app",
        "home": "~/app",
    }[form]
    _point(taxonomy, repo)
    issue = _document_issue(taxonomy)
    assert "not inside the taxonomy or a folder listed in tuning.document_roots" in issue.message
    assert "settings.md" not in issue.message and "hunter2" not in issue.message


def test_a_symlink_out_of_the_document_folder_is_not_read(tmp_path, secrets):
    taxonomy = copy_example(tmp_path)
    (taxonomy / "documents" / "leak.md").symlink_to(secrets / "settings.md")
    (taxonomy / "documents" / "dir").symlink_to(secrets)
    recipe = next(r for r in validate_taxonomy(taxonomy).recipes if r.leaf == LEAF)
    recipe.document["patterns"] = ["*.md", "dir/*.md"]
    docs = DocumentSource().read(recipe)
    assert [d.name for d in docs] == ["acme_benefits.md"]
    assert not any("DB_PASSWORD" in d.text for d in docs)
    recipe.document["patterns"] = ["../../app/*.md"]
    with pytest.raises(DocumentNotFound, match="leaves the document repo"):
        DocumentSource().read(recipe)


def test_a_configured_document_root_is_readable_and_nothing_beside_it(tmp_path, secrets):
    taxonomy = copy_example(tmp_path)
    shared = tmp_path / "shared_docs"
    shared.mkdir()
    (shared / "handbook.md").write_text("# Handbook\n\nThe canteen opens at 11:30.\n")
    _point(taxonomy, str(shared))
    docs = DocumentSource(roots=[shared])
    assert validate_taxonomy(taxonomy, docs=docs).ok
    _point(taxonomy.parent / "taxonomy", str(secrets))  # the file now names the secrets folder instead
    qna = taxonomy / LEAF / "qna.yaml"
    qna.write_text(qna.read_text().replace(str(shared), str(secrets)))
    assert "not inside the taxonomy" in _document_issue(taxonomy, docs=docs).message


def test_a_missing_pattern_does_not_list_the_folder(tmp_path):
    taxonomy = copy_example(tmp_path)
    (taxonomy / "documents" / "salaries-2026.xlsx").write_text("x")
    _point(taxonomy, "../../../documents", patterns="*.txt")
    issue = _document_issue(taxonomy)
    assert "no file in ../../../documents matches patterns ['*.txt']" in issue.message
    assert "acme_benefits" not in issue.message and "salaries" not in issue.message


@pytest.mark.parametrize("commit", ["HEAD", "main", "--all", "abc", "e383d65cea9bb76ae05d7f81bb10168789522872 x"])
def test_commit_must_be_a_hex_object_id(tmp_path, commit):
    taxonomy = copy_example(tmp_path)
    _point(taxonomy, "../../../documents", patterns="acme_benefits.md", commit=commit)
    issue = _document_issue(taxonomy)
    assert "is not a commit id" in issue.message and issue.line == 7


@pytest.mark.parametrize(
    "url", ["--depth=1://x", "-uhttps://x/y", "ext::sh -c touch% /tmp/pwned", "ftp://host/repo", "https://"]
)
def test_option_like_or_odd_urls_never_reach_git(tmp_path, url):
    taxonomy = copy_example(tmp_path)
    _point(taxonomy, url)
    issue = _document_issue(taxonomy)
    assert "is not a repo URL Carafe clones" in issue.message or "not inside the taxonomy" in issue.message
    recipe = next(r for r in validate_taxonomy(copy_example(tmp_path / "b")).recipes if r.leaf == LEAF)
    recipe.document["repo"] = url
    with pytest.raises(DocumentNotFound):
        DocumentSource(clone_dir=tmp_path / "clones", clone_hosts=["x", "host"]).read(recipe)
    assert not (tmp_path / "clones").exists()  # git was never run


@pytest.fixture
def internal_repo(tmp_path):
    """A git repo served over plain HTTP on 127.0.0.1: the 'internal URL' of the attack."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "internal.md").write_text("# Internal\n\nThe VPN key is in vault/prod.\n")
    git(work, "init", "-q")
    git(work, "add", ".")
    git(work, "commit", "-qm", "docs")
    head = git(work, "rev-parse", "HEAD")
    git(tmp_path, "clone", "-q", "--bare", str(work), str(tmp_path / "served" / "docs.git"))
    git(tmp_path / "served" / "docs.git", "update-server-info")
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a) -> None:
            hits.append(self.path)

    handler = functools.partial(Handler, directory=str(tmp_path / "served"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/docs.git", head, hits
    server.shutdown()


def test_the_host_fetches_no_url_unless_its_host_is_allowed(tmp_path, internal_repo):
    url, head, hits = internal_repo
    taxonomy = copy_example(tmp_path)
    _point(taxonomy, url, patterns="*.md", commit=head)
    ws = Workspace(TuningConfig(), taxonomy, tmp_path / "out", tmp_path / "models", tmp_path / "reg")
    recipe = next(r for r in ws.recipes() if r.leaf == LEAF)  # validation never fetches
    with pytest.raises(DocumentNotFound) as exc:
        ws.documents().read(recipe)
    assert "has no mirror" in exc.value.message and "tuning.document_hosts" in exc.value.message
    assert hits == [] and not (tmp_path / "out" / "documents").exists()
    allowed = Workspace(
        TuningConfig(document_hosts=["127.0.0.1"]), taxonomy, tmp_path / "out", tmp_path / "models", tmp_path / "reg"
    )
    assert "VPN" in allowed.documents().read(recipe)[0].text and hits
