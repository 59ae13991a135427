"""Changed taxonomy leaves since a git base, as InstructLab's `taxonomy diff` computes them."""

from __future__ import annotations

import subprocess
from pathlib import Path

from carafe.errors import InvalidInput
from carafe.tuning.errors import TuningError
from carafe.tuning.recipe import QNA_FILE, TAXONOMY_ROOTS


class NotAGitTaxonomy(InvalidInput, TuningError):
    """`taxonomy diff` needs the taxonomy in a git repo and a base that exists in it."""


def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise NotAGitTaxonomy(f"git {' '.join(args)} failed in {cwd}: {out.stderr.strip()}")
    return out.stdout


def changed_leaves(taxonomy: Path, base: str = "origin/main") -> list[Path]:
    """qna.yaml files changed since merge-base(base, HEAD), including uncommitted and untracked ones.

    Deleted recipes are not returned (there is nothing left to validate or train on).
    """
    taxonomy = Path(taxonomy).resolve()
    try:
        top = Path(_git(taxonomy, "rev-parse", "--show-toplevel").strip())
    except NotAGitTaxonomy:
        raise NotAGitTaxonomy(
            f"{taxonomy} is not inside a git repository; run `git init` there or use `taxonomy validate`"
        ) from None
    try:
        merge_base = _git(top, "merge-base", base, "HEAD").strip()
    except NotAGitTaxonomy:
        raise NotAGitTaxonomy(
            f"base {base!r} is not a ref of the repo at {top}; pass --base with a branch, tag or commit"
        ) from None
    names = set(_git(top, "diff", "--name-only", merge_base, "--").splitlines())
    names |= set(_git(top, "ls-files", "--others", "--exclude-standard").splitlines())
    leaves: list[Path] = []
    for name in sorted(names):
        path = top / name
        if path.name != QNA_FILE or not path.is_file() or not path.is_relative_to(taxonomy):
            continue
        if path.relative_to(taxonomy).parts[0] in TAXONOMY_ROOTS:
            leaves.append(path)
    return leaves
