"""Knowledge documents: a local folder or a local git repo at a pinned commit, cut into chunks."""

from __future__ import annotations

import fnmatch
import subprocess
from dataclasses import dataclass
from pathlib import Path

from carafe.tuning.errors import DocumentNotFound
from carafe.tuning.recipe import Recipe

__all__ = ["Document", "Chunk", "DocumentNotFound", "resolve_documents", "chunk_documents"]


@dataclass(frozen=True)
class Document:
    name: str
    text: str


@dataclass(frozen=True)
class Chunk:
    id: str  # "<document>#<n>"
    text: str


def _repo_path(recipe: Recipe) -> Path:
    repo = str(recipe.document["repo"])  # type: ignore[index]
    if repo.startswith("file://"):
        repo = repo[len("file://"):]
    elif "://" in repo or repo.startswith("git@"):
        raise DocumentNotFound(
            f"{recipe.leaf}: document repo {repo} is remote and Carafe does not fetch from the network; "
            "clone it locally and set document.repo to the clone's path", param="repo")
    path = Path(repo).expanduser()
    if not path.is_absolute():
        path = recipe.path.parent / path
    if not path.is_dir():
        raise DocumentNotFound(f"{recipe.leaf}: document repo {repo} does not exist (looked at {path.resolve()})", param="repo")
    return path.resolve()


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise DocumentNotFound(out.stderr.strip() or f"git {' '.join(args)} failed")
    return out.stdout


def resolve_documents(recipe: Recipe) -> list[Document]:
    """Read the documents a knowledge recipe points at; errors name the recipe and the cause.

    A folder that is the top of a git repo is read at `document.commit` (which must exist in
    it); any other folder is read as it is on disk (the commit is then informational).
    """
    assert recipe.document is not None
    root = _repo_path(recipe)
    patterns = [str(p) for p in recipe.document.get("patterns", [])]
    commit = str(recipe.document.get("commit", ""))
    docs: list[Document] = []
    if (root / ".git").exists():
        try:
            _git(root, "cat-file", "-e", f"{commit}^{{commit}}")
        except DocumentNotFound:
            raise DocumentNotFound(f"{recipe.leaf}: commit {commit} is not in the document repo {root}", param="commit") from None
        names = _git(root, "ls-tree", "-r", "--name-only", commit).splitlines()
        for name in names:
            if any(fnmatch.fnmatch(name, p) for p in patterns):
                docs.append(Document(name, _git(root, "show", f"{commit}:{name}")))
    else:
        for p in patterns:
            for f in sorted(root.glob(p)):
                if f.is_file():
                    docs.append(Document(f.relative_to(root).as_posix(), f.read_text(encoding="utf-8")))
    if not docs:
        raise DocumentNotFound(f"{recipe.leaf}: no document in {root} matches patterns {patterns}", param="patterns")
    return docs


def chunk_documents(docs: list[Document], words: int) -> list[Chunk]:
    """Cut documents at paragraph boundaries into chunks of about `words` words."""
    chunks: list[Chunk] = []
    for doc in docs:
        current: list[str] = []
        count, n = 0, 0
        paragraphs = [p.strip() for p in doc.text.split("\n\n") if p.strip()]
        for para in paragraphs:
            size = len(para.split())
            if current and count + size > words:
                carry = [current.pop()] if current[-1].startswith("#") and len(current) > 1 else []  # keep a heading with its text
                chunks.append(Chunk(f"{doc.name}#{n}", "\n\n".join(current)))
                current, count, n = carry, sum(len(c.split()) for c in carry), n + 1
            current.append(para)
            count += size
        if current:
            chunks.append(Chunk(f"{doc.name}#{n}", "\n\n".join(current)))
    return chunks
