"""The manifest of an adapter version: what is in the glass.

Every version in the registry carries a ``manifest.json`` next to its PEFT files:
which base model it was trained on (id and content digest), what kind of adapter it
is, a description (used by ``auto`` routing), where it came from (recipes, data,
teacher), how it was trained (hyperparameters per phase) and how it scored.
:mod:`carafe.tuning` writes it when it publishes; ``carafe adapters add`` writes a
minimal one for a bare PEFT directory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from carafe.adapters.errors import InvalidAdapter

MANIFEST_FILE = "manifest.json"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

AdapterKind = Literal["knowledge", "skill", "style", "other"]


def check_name(name: str) -> str:
    """An adapter name: lowercase letters, digits, ``.``, ``_``, ``-`` (no ``@`` or ``/``)."""
    if not NAME_PATTERN.fullmatch(name or ""):
        raise InvalidAdapter(
            f"invalid adapter name {name!r}: use 1-64 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no '@' or '/')",
            param="name",
        )
    return name


class BaseModelRef(BaseModel):
    """The base model an adapter was trained on."""

    id: str = Field(description="Served id of the base model, e.g. SmolLM2-135M-Instruct")
    digest: str = Field(description="sha256:<hex> of the base model's weights (Engine.model_digest)")


class SourceRef(BaseModel):
    """A recipe (qna.yaml) an adapter was generated from."""

    path: str
    sha256: str


class DataRef(BaseModel):
    """The training data set."""

    sha256: str
    size: int = Field(0, ge=0, description="Number of examples")


class Manifest(BaseModel):
    """``manifest.json`` of one adapter version (see ARCHITECTURE.md)."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: int = Field(0, ge=0, description="Assigned by the registry when 0")
    base_model: BaseModelRef
    kind: AdapterKind = "other"
    description: str = ""
    rank: int | None = Field(None, description="LoRA rank (from adapter_config.json)")
    adapter_digest: str | None = Field(None, description="sha256 of the PEFT files, set by the registry")
    recipes: list[SourceRef] = Field(default_factory=list)
    data: DataRef | None = None
    teacher: str | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="Per phase, e.g. {'knowledge': {...}}")
    metrics: dict[str, Any] = Field(default_factory=dict)
    created_at: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)

    @property
    def ref(self) -> str:
        """``name@version``: the engine adapter name of this version."""
        return f"{self.name}@{self.version}"


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest in ``folder``, None when there is none; InvalidAdapter when broken."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        return Manifest.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise InvalidAdapter(f"{path} is not a valid adapter manifest: {exc}", param="path") from exc


def content_digest(folder: Path) -> str:
    """``sha256:<hex>`` over the relative paths and bytes of every file but the manifest."""
    h = hashlib.sha256()
    folder = Path(folder)
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = file.relative_to(folder).as_posix()
        if rel == MANIFEST_FILE:
            continue
        h.update(rel.encode() + b"\0")
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return "sha256:" + h.hexdigest()
