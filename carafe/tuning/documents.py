"""Knowledge documents: a local folder, a local git repo at a pinned commit, or a remote repo
read from a configured mirror, an earlier clone, or a fresh clone from an allowed host.

A recipe is data from whoever opened the taxonomy pull request, so it is never trusted with the
host: a local document folder must lie inside the taxonomy or a configured document root (no
absolute paths, no ``file://``, no ``..`` or symlinks out), errors never list a folder's files,
only hosts on ``tuning.document_hosts`` are cloned from (mirrors are the documented path), a URL
reaches git only after ``--`` and a scheme check, and ``commit`` must be a hex object id.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from carafe.tuning.errors import DocumentNotFound
from carafe.tuning.recipe import Recipe

__all__ = [
    "Chunk",
    "Document",
    "DocumentNotFound",
    "DocumentSource",
    "check_document_fields",
    "chunk_documents",
    "is_remote",
    "resolve_documents",
]

CLONE_TIMEOUT_S = 120
CLONE_SCHEMES = ("https", "http", "ssh")
_COMMIT = re.compile(r"^[0-9a-f]{7,64}$")
_SCP = re.compile(r"^[A-Za-z0-9._-]+@([A-Za-z0-9.-]+):[A-Za-z0-9._~/-]+$")  # git@host:owner/repo.git


@dataclass(frozen=True)
class Document:
    name: str
    text: str


@dataclass(frozen=True)
class Chunk:
    id: str  # "<document>#<n>"
    text: str


def is_remote(repo: str) -> bool:
    """A URL or git transport (``ext::``, ``git@host:``): cloned, never read as a local path."""
    return not repo.startswith("file:") and ("://" in repo or "::" in repo or repo.startswith("git@"))


def remote_host(url: str) -> str:
    """The host of a remote repo URL that git may be given; DocumentNotFound for anything else.

    Only https/http/ssh URLs and scp-like ``user@host:path`` pass: no ``ext::``, ``file://``,
    no leading ``-`` (an option to git), no spaces or control characters.
    """
    bad = DocumentNotFound(
        f"document repo {url!r} is not a repo URL Carafe clones; use https://host/owner/repo(.git) "
        f"or git@host:owner/repo.git (schemes: {', '.join(CLONE_SCHEMES)})",
        param="repo",
    )
    if url.startswith("-") or any(c.isspace() or ord(c) < 32 for c in url):
        raise bad
    if m := _SCP.match(url):
        return m.group(1).lower()
    parts = urlsplit(url)
    if parts.scheme not in CLONE_SCHEMES or not parts.hostname or parts.hostname.startswith("-"):
        raise bad
    return parts.hostname.lower()


def check_commit(recipe: Recipe) -> str:
    """The recipe's `document.commit`, which must be a hex object id (7-64 hex digits)."""
    commit = str((recipe.document or {}).get("commit", ""))
    if not _COMMIT.match(commit):
        raise DocumentNotFound(
            f"{recipe.leaf}: document.commit {commit[:60]!r} is not a commit id; write the 40-hex-digit "
            "commit of the document repo (git rev-parse HEAD)",
            param="commit",
        )
    return commit


def check_patterns(recipe: Recipe) -> list[str]:
    """The recipe's file patterns, which must stay inside the document repo."""
    patterns = [str(p) for p in (recipe.document or {}).get("patterns", [])]
    for p in patterns:
        if p.startswith(("/", "\\", "~")) or ".." in Path(p).parts or ":" in p:
            raise DocumentNotFound(
                f"{recipe.leaf}: document pattern {p!r} leaves the document repo; write patterns relative to "
                "it, without '..', '~' or a leading '/'",
                param="patterns",
            )
    return patterns


def check_document_fields(recipe: Recipe) -> None:
    """What can be checked without touching the disk or the network: commit, patterns, URL shape."""
    check_commit(recipe)
    check_patterns(recipe)
    repo = str((recipe.document or {}).get("repo", ""))
    if is_remote(repo):
        try:
            remote_host(repo)
        except DocumentNotFound as exc:
            raise DocumentNotFound(f"{recipe.leaf}: {exc.message}", param="repo") from None


def taxonomy_root(recipe: Recipe) -> Path:
    """The taxonomy folder a recipe belongs to (its leaf path climbed back up)."""
    root = recipe.path.parent
    for _ in recipe.leaf.split("/"):
        root = root.parent
    return root


def _url_key(url: str) -> str:
    return url.strip().rstrip("/").removesuffix(".git")


def _git(repo: Path, *args: str, timeout: float | None = None) -> str:
    # Only network transports (no ext::, file://), no prompts, no redirect to another (internal) host.
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": ":".join(CLONE_SCHEMES)}
    cmd = ["git", "-c", "http.followRedirects=false", "-C", str(repo), *args]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DocumentNotFound(f"git {' '.join(args)} took more than {timeout:.0f} s") from None
    if out.returncode != 0:
        raise DocumentNotFound(
            out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"git {' '.join(args)} failed"
        )
    return out.stdout


@dataclass
class DocumentSource:
    """Where documents may come from.

    Local folders: inside the recipe's taxonomy or one of `roots`. Remote repos: `mirrors`
    ({URL: local path}) first, then clones in `clone_dir` from a host in `clone_hosts`. Without
    `clone_dir` or an allowed host nothing is cloned: a remote repo must be mirrored.
    """

    mirrors: Mapping[str, Path] = field(default_factory=dict)
    clone_dir: Path | None = None
    roots: Iterable[Path] = ()
    clone_hosts: Iterable[str] = ()

    def _local(self, recipe: Recipe, repo: str) -> Path:
        """A local document folder, refused unless it resolves inside the taxonomy or a document root."""
        outside = DocumentNotFound(
            f"{recipe.leaf}: document repo {repo} is not inside the taxonomy or a folder listed in "
            "tuning.document_roots; keep documents in the taxonomy (a relative path), list their folder in "
            "tuning.document_roots, or give a remote repo URL with a mirror",
            param="repo",
        )
        if repo.startswith("file:") or (Path(repo).expanduser().is_absolute() and not self.roots):
            raise outside
        path = (recipe.path.parent / Path(repo).expanduser()).resolve()
        allowed = [taxonomy_root(recipe).resolve(), *(Path(r).expanduser().resolve() for r in self.roots)]
        if not any(path.is_relative_to(root) for root in allowed):
            raise outside
        if not path.is_dir():
            raise DocumentNotFound(f"{recipe.leaf}: document repo {repo} does not exist", param="repo")
        return path

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
            return self._local(recipe, repo)
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
        host = remote_host(repo)
        if self.clone_dir is None or host not in {h.lower() for h in self.clone_hosts}:
            allow = "" if self.clone_dir is None else f", or allow cloning from {host} in tuning.document_hosts"
            raise DocumentNotFound(f"{recipe.leaf}: document repo {repo} has no mirror; {how}{allow}", param="repo")
        dest = self._clone_path(repo)
        if not (dest / ".git").exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                _git(dest.parent, "clone", "--quiet", "--no-checkout", "--", repo, dest.name, timeout=CLONE_TIMEOUT_S)
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
        check_document_fields(recipe)
        root = self.locate(recipe)
        patterns, commit = check_patterns(recipe), check_commit(recipe)
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
            # a symlink inside the folder must not lead out of it
            docs = [
                Document(f.relative_to(root).as_posix(), f.read_text(encoding="utf-8"))
                for f in found
                if f.resolve().is_relative_to(root)
            ]
            where = str(recipe.document.get("repo"))
        if not docs:  # the folder's files are not listed: a CI log is no place to browse the host
            raise DocumentNotFound(
                f"{recipe.leaf}: no file in {where} matches patterns {patterns}; check the file names and "
                "the patterns (glob syntax, relative to the document repo)",
                param="patterns",
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
