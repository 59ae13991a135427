"""Knowledge documents: a local folder, a local git repo at a pinned commit, or a remote repo
read from a configured mirror, an earlier clone, or a fresh clone when the URL is reachable.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from carafe.tuning.errors import DocumentNotFound
from carafe.tuning.recipe import Recipe

__all__ = [
    "Chunk",
    "Document",
    "DocumentNotFound",
    "DocumentSource",
    "chunk_documents",
    "is_remote",
    "resolve_documents",
]

CLONE_TIMEOUT_S = 120


@dataclass(frozen=True)
class Document:
    name: str
    text: str


@dataclass(frozen=True)
class Chunk:
    id: str  # "<document>#<n>"
    text: str


def is_remote(repo: str) -> bool:
    return not repo.startswith("file://") and ("://" in repo or repo.startswith("git@"))


def _url_key(url: str) -> str:
    return url.strip().rstrip("/").removesuffix(".git")


def _git(repo: Path, *args: str, timeout: float | None = None) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DocumentNotFound(f"git {' '.join(args)} took more than {timeout:.0f} s") from None
    if out.returncode != 0:
        raise DocumentNotFound(
            out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"git {' '.join(args)} failed"
        )
    return out.stdout


@dataclass
class DocumentSource:
    """Where remote document repos come from: `mirrors` ({URL: local path}) first, then clones in `clone_dir`.

    Without `clone_dir` nothing is cloned: a remote repo must be mirrored.
    """

    mirrors: Mapping[str, Path] = field(default_factory=dict)
    clone_dir: Path | None = None

    def _mirror(self, url: str) -> Path | None:
        for key, path in self.mirrors.items():
            if _url_key(key) == _url_key(url):
                return Path(path).expanduser()
        return None

    def _clone_path(self, url: str) -> Path:
        assert self.clone_dir is not None
        return self.clone_dir / re.sub(r"[^A-Za-z0-9._-]+", "_", _url_key(url).split("://", 1)[-1])

    def locate(self, recipe: Recipe) -> Path:
        """The local folder holding the recipe's document repo; clones it when it must and can."""
        repo = str(recipe.document["repo"])  # type: ignore[index]
        if not is_remote(repo):
            path = Path(repo.removeprefix("file://")).expanduser()
            path = path if path.is_absolute() else recipe.path.parent / path
            if not path.is_dir():
                raise DocumentNotFound(
                    f"{recipe.leaf}: document repo {repo} does not exist (looked at {path.resolve()})", param="repo"
                )
            return path.resolve()
        mirror = self._mirror(repo)
        if mirror is not None:
            if not mirror.is_dir():
                raise DocumentNotFound(
                    f"{recipe.leaf}: the mirror of {repo} configured in tuning.document_mirrors, "
                    f"{mirror}, does not exist; clone it there (git clone {repo} {mirror})",
                    param="repo",
                )
            return mirror.resolve()
        how = f"clone it (git clone {repo} PATH) and add it to carafe.yaml as tuning.document_mirrors: {{{repo}: PATH}}"
        if self.clone_dir is None:
            raise DocumentNotFound(f"{recipe.leaf}: document repo {repo} has no mirror; {how}", param="repo")
        dest = self._clone_path(repo)
        if not (dest / ".git").exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                _git(dest.parent, "clone", "--quiet", "--no-checkout", repo, dest.name, timeout=CLONE_TIMEOUT_S)
            except DocumentNotFound as exc:
                raise DocumentNotFound(
                    f"{recipe.leaf}: document repo {repo} has no mirror and cloning it failed ({exc.message}); {how}",
                    param="repo",
                ) from None
        return dest

    def read(self, recipe: Recipe) -> list[Document]:
        """The documents of a knowledge recipe; errors name the recipe, the place and what is missing.

        A folder that is the top of a git repo is read at `document.commit` (which must be in it);
        any other folder is read as it is on disk (the commit is then informational).
        """
        assert recipe.document is not None
        root = self.locate(recipe)
        patterns = [str(p) for p in recipe.document.get("patterns", [])]
        commit = str(recipe.document.get("commit", ""))
        if (root / ".git").exists():
            try:
                _git(root, "cat-file", "-e", f"{commit}^{{commit}}")
            except DocumentNotFound:
                raise DocumentNotFound(
                    f"{recipe.leaf}: commit {commit} is not in the document repo {root}; "
                    f"fetch it (git -C {root} fetch origin {commit})",
                    param="commit",
                ) from None
            names = _git(root, "ls-tree", "-r", "--name-only", commit).splitlines()
            docs = [
                Document(n, _git(root, "show", f"{commit}:{n}"))
                for n in names
                if any(fnmatch.fnmatch(n, p) for p in patterns)
            ]
            where = f"{root} at commit {commit}"
        else:
            found = [f for p in patterns for f in sorted(root.glob(p)) if f.is_file()]
            docs = [Document(f.relative_to(root).as_posix(), f.read_text(encoding="utf-8")) for f in found]
            names = sorted(f.relative_to(root).as_posix() for f in root.rglob("*") if f.is_file()) if not docs else []
            where = str(root)
        if not docs:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") if names else "no files"
            raise DocumentNotFound(
                f"{recipe.leaf}: no file in {where} matches patterns {patterns} (it holds: {shown})", param="patterns"
            )
        return docs


def resolve_documents(recipe: Recipe, source: DocumentSource | None = None) -> list[Document]:
    """Read a knowledge recipe's documents (local repos only, unless `source` says where remote ones are)."""
    return (source or DocumentSource()).read(recipe)


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
                carry = (
                    [current.pop()] if current[-1].startswith("#") and len(current) > 1 else []
                )  # keep a heading with its text
                chunks.append(Chunk(f"{doc.name}#{n}", "\n\n".join(current)))
                current, count, n = carry, sum(len(c.split()) for c in carry), n + 1
            current.append(para)
            count += size
        if current:
            chunks.append(Chunk(f"{doc.name}#{n}", "\n\n".join(current)))
    return chunks
