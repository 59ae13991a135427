"""Remote knowledge documents: a mirror folder, a git mirror at the pinned commit, a real clone over HTTP,
and exact messages for what is missing."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading

import pytest

from carafe.tuning.documents import DocumentNotFound, DocumentSource
from carafe.tuning.validate import validate_taxonomy
from tests.tuning.taxo import CORPUS_DOC_URL, CORPUS_MIRROR, copy_corpus, git

LEAF = "knowledge/science/animals/birds/chickadee"


@pytest.fixture
def recipe(tmp_path):
    return next(r for r in validate_taxonomy(copy_corpus(tmp_path)).recipes if r.leaf == LEAF)


def _git_repo(path, files: dict[str, str]) -> str:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    git(path, "init", "-q")
    git(path, "add", ".")
    git(path, "commit", "-qm", "docs")
    return git(path, "rev-parse", "HEAD")


def test_a_mirror_folder_serves_the_remote_repo(recipe):
    docs = DocumentSource({CORPUS_DOC_URL + ".git/": CORPUS_MIRROR}).read(recipe)  # URL spelling does not matter
    assert [d.name for d in docs] == ["chickadee.md"] and "state bird of Maine" in docs[0].text


def test_a_git_mirror_is_read_at_the_pinned_commit(recipe, tmp_path):
    head = _git_repo(tmp_path / "mirror", {"chickadee.md": "# Chickadee\n\nPinned text.\n"})
    (tmp_path / "mirror" / "chickadee.md").write_text("changed after the commit\n")
    recipe.document["commit"] = head
    docs = DocumentSource({CORPUS_DOC_URL: tmp_path / "mirror"}).read(recipe)
    assert docs[0].text == "# Chickadee\n\nPinned text.\n"
    recipe.document["commit"] = "5f7158a5ce83c4ff493bfe341fe31ecad64ff697"
    with pytest.raises(DocumentNotFound) as exc:
        DocumentSource({CORPUS_DOC_URL: tmp_path / "mirror"}).read(recipe)
    assert exc.value.message == (
        f"{LEAF}: commit 5f7158a5ce83c4ff493bfe341fe31ecad64ff697 is not in the document repo "
        f"{(tmp_path / 'mirror').resolve()}; fetch it (git -C {(tmp_path / 'mirror').resolve()} "
        "fetch origin 5f7158a5ce83c4ff493bfe341fe31ecad64ff697)"
    )


def test_patterns_must_match_a_file(recipe):
    recipe.document["patterns"] = ["birds/*.md"]
    with pytest.raises(DocumentNotFound) as exc:
        DocumentSource({CORPUS_DOC_URL: CORPUS_MIRROR}).read(recipe)
    assert exc.value.message == (
        f"{LEAF}: no file in {CORPUS_DOC_URL} matches patterns ['birds/*.md']; check the file names and the "
        "patterns (glob syntax, relative to the document repo)"
    )  # the folder's files are not listed (M4: validation errors end up in CI logs)


def test_unmirrored_remote_repo_says_how_to_mirror_it(recipe, tmp_path):
    with pytest.raises(DocumentNotFound) as exc:
        DocumentSource().read(recipe)
    assert exc.value.message == (
        f"{LEAF}: document repo {CORPUS_DOC_URL} has no mirror; clone it (git clone {CORPUS_DOC_URL} PATH) "
        f"and add it to carafe.yaml as tuning.document_mirrors: {{{CORPUS_DOC_URL}: PATH}}"
    )
    recipe.document["repo"] = "http://127.0.0.1:9/nothing.git"  # nothing listens on the discard port
    with pytest.raises(DocumentNotFound) as exc:
        DocumentSource(clone_dir=tmp_path / "clones", clone_hosts=["127.0.0.1"]).read(recipe)
    assert (
        "has no mirror and cloning it failed (" in exc.value.message and "tuning.document_mirrors" in exc.value.message
    )
    with pytest.raises(DocumentNotFound) as exc:
        DocumentSource({"http://127.0.0.1:9/nothing": tmp_path / "absent"}).read(recipe)
    assert exc.value.message.endswith(
        f"{tmp_path / 'absent'}, does not exist; clone it there "
        f"(git clone http://127.0.0.1:9/nothing.git {tmp_path / 'absent'})"
    )


def test_a_reachable_repo_is_cloned_once_and_read_at_the_commit(recipe, tmp_path):
    head = _git_repo(tmp_path / "work", {"chickadee.md": "# Chickadee\n\nServed over HTTP.\n", "other.txt": "x"})
    git(tmp_path, "clone", "-q", "--bare", str(tmp_path / "work"), str(tmp_path / "served" / "docs.git"))
    git(tmp_path / "served" / "docs.git", "update-server-info")  # git's "dumb HTTP" protocol: plain files
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "served"))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        recipe.document.update(repo=f"http://127.0.0.1:{server.server_port}/docs.git", commit=head)
        source = DocumentSource(clone_dir=tmp_path / "clones", clone_hosts=["127.0.0.1"])
        assert [d.text for d in source.read(recipe)] == ["# Chickadee\n\nServed over HTTP.\n"]
    finally:
        server.shutdown()
    shutil.rmtree(tmp_path / "served")
    assert [d.name for d in source.read(recipe)] == ["chickadee.md"]  # the clone is reused: no server needed
