"""Builders of small taxonomies for the tuning tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "taxonomy"


def copy_example(dest: Path) -> Path:
    """A copy of the example taxonomy (its documents live inside it, in documents/)."""
    shutil.copytree(EXAMPLE, dest / "taxonomy")
    return dest / "taxonomy"


def skill_yaml(n: int = 5, version: int = 3) -> str:
    seeds = "".join(f"  - question: Question number {i}?\n    answer: Answer number {i}.\n" for i in range(n))
    return f"version: {version}\ncreated_by: tester\ntask_description: A test skill.\nseed_examples:\n{seeds}"


def write_leaf(taxonomy: Path, leaf: str, text: str, name: str = "qna.yaml") -> Path:
    path = taxonomy / leaf / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), "-c", "user.email=t@t", "-c", "user.name=t", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


CORPUS = Path(__file__).resolve().parent / "corpus"
CORPUS_TAXONOMY = CORPUS / "taxonomy"
CORPUS_MIRROR = CORPUS / "mirrors" / "summit_knowledge"
CORPUS_DOC_URL = "https://github.com/juliadenham/Summit_knowledge"


def copy_corpus(dest: Path) -> Path:
    """The corpus's valid leaves (its `invalid/` folders left out) as a taxonomy of their own."""
    shutil.copytree(CORPUS_TAXONOMY, dest / "taxonomy", ignore=shutil.ignore_patterns("invalid"))
    return dest / "taxonomy"
