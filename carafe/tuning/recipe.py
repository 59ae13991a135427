"""Recipes: a taxonomy leaf's `qna.yaml` plus Carafe's optional sidecar fields."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field

Kind = Literal["knowledge", "skill", "style"]
QNA_FILE = "qna.yaml"
SIDECAR_FILE = "carafe.adapter.yaml"
TAXONOMY_ROOTS = ("compositional_skills", "knowledge", "foundational_skills")


class Sidecar(BaseModel, extra="forbid"):
    """Carafe's own fields, kept beside `qna.yaml` so upstream recipes stay valid upstream.

    At the taxonomy root it names the adapter; in a leaf it says what the leaf teaches.
    """

    adapter: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="Adapter name")
    kind: Kind | None = Field(None, description="knowledge / skill / style")
    description: str | None = Field(None, description="What the adapter is for (used by auto routing)")
    signoff: str | None = Field(None, description="Style leaves: the closing every answer must carry")


@dataclass(frozen=True)
class SeedExample:
    question: str
    answer: str
    context: str | None = None


@dataclass
class Recipe:
    """One parsed, valid leaf."""

    leaf: str  # path relative to the taxonomy root, e.g. "compositional_skills/hr/style"
    path: Path  # the qna.yaml file
    version: int
    kind: Kind
    task_description: str
    seeds: list[SeedExample]
    created_by: str
    domain: str | None = None
    document: dict | None = None
    document_outline: str | None = None
    sidecar: Sidecar = field(default_factory=Sidecar)
    sha256: str = ""

    @property
    def is_knowledge(self) -> bool:
        return self.document is not None

    def split_seeds(self, holdout: int) -> tuple[list[SeedExample], list[SeedExample]]:
        """(generation seeds, held-out evaluation seeds), never used for generation.

        Knowledge: the last Q&A of every context (each fact stays taught, each is tested);
        skills: the last `holdout` seeds.
        """
        if self.is_knowledge:
            last = {s.context: s for s in self.seeds}
            held = [
                s for s in self.seeds if last[s.context] is s and sum(x.context == s.context for x in self.seeds) > 1
            ]
        else:
            held = self.seeds[len(self.seeds) - min(holdout, max(len(self.seeds) - 1, 0)) :] if holdout else []
        return [s for s in self.seeds if s not in held], held


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_sidecar(folder: Path) -> Sidecar | None:
    path = folder / SIDECAR_FILE
    if not path.is_file():
        return None
    return Sidecar.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})


def recipe_from_contents(leaf: str, path: Path, contents: dict, sidecar: Sidecar | None, version: int) -> Recipe:
    """Build a Recipe from schema-valid contents (validation is `validate.py`'s job)."""
    seeds: list[SeedExample] = []
    if "document" in contents:
        # Knowledge v3: each seed is a context with 3+ Q&A; flatten, keeping the context.
        for ex in contents["seed_examples"]:
            for qa in ex["questions_and_answers"]:
                seeds.append(SeedExample(qa["question"].strip(), qa["answer"].strip(), ex["context"].strip()))
        default_kind: Kind = "knowledge"
    else:
        for ex in contents["seed_examples"]:
            ctx = ex.get("context")
            seeds.append(SeedExample(ex["question"].strip(), ex["answer"].strip(), ctx.strip() if ctx else None))
        default_kind = "skill"
    side = sidecar or Sidecar()
    return Recipe(
        leaf=leaf,
        path=path,
        version=version,
        kind=side.kind or default_kind,
        task_description=str(contents.get("task_description") or contents.get("domain") or leaf),
        seeds=seeds,
        created_by=str(contents["created_by"]),
        domain=contents.get("domain"),
        document=contents.get("document"),
        document_outline=contents.get("document_outline"),
        sidecar=side,
        sha256=file_sha256(path),
    )
