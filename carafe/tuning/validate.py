"""Taxonomy validation: InstructLab's JSON schemas (instructlab-schema) plus yamllint rules.

Every finding is an :class:`Issue` naming the file, line, rule and a fix hint.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from instructlab.schema import schema_base, schema_versions
from jsonschema.validators import validator_for
from pydantic import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from yamllint import linter
from yamllint.config import YamlLintConfig

from carafe.tuning.documents import DocumentNotFound, DocumentSource, check_document_fields, is_remote
from carafe.tuning.recipe import QNA_FILE, SIDECAR_FILE, TAXONOMY_ROOTS, Recipe, read_sidecar, recipe_from_contents

# InstructLab's default ("relaxed", no line length) with the rules Carafe enforces raised to errors.
_YAMLLINT = YamlLintConfig(
    "{extends: relaxed, rules: {line-length: disable, trailing-spaces: enable, "
    "new-line-at-end-of-file: enable, key-duplicates: enable}}"
)

_HINTS = {
    "trailing-spaces": "delete the spaces at the end of the line",
    "new-line-at-end-of-file": "end the file with a newline",
    "key-duplicates": "keep one of the duplicated keys (YAML silently keeps the last)",
    "syntax": "fix the YAML syntax (indentation, quoting, a missing ':')",
    "file-name": f"rename the file to {QNA_FILE}, one recipe per leaf folder",
    "version": "set `version: 3` (the current InstructLab schema)",
    "minItems": "add examples: skills need at least 5 seed_examples, knowledge 5 contexts with 3 Q&A each",
    "required": "add the missing key",
    "unevaluatedProperties": "remove the key; the schema does not know it (Carafe fields go in carafe.adapter.yaml)",
    "document": "point document.repo at an existing folder or git repo, and document.commit at a commit in it",
    "sidecar": "fix carafe.adapter.yaml: allowed keys are adapter, kind (knowledge/skill/style), description, signoff",
}


@dataclass(frozen=True)
class Issue:
    file: str
    line: int
    rule: str
    message: str
    hint: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: [{self.rule}] {self.message} (fix: {self.hint})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ValidationReport:
    recipes: list[Recipe]
    issues: list[Issue]

    @property
    def ok(self) -> bool:
        return not any(i.severity == "error" for i in self.issues)


@functools.lru_cache
def _schema(version: int, name: str) -> tuple[dict, Registry]:
    def retrieve(uri: str) -> Resource:
        text = schema_base().joinpath(f"v{version}", uri).read_text(encoding="utf-8")
        return Resource.from_contents(json.loads(text), default_specification=DRAFT202012)

    return retrieve(f"{name}.json").contents, Registry(retrieve=retrieve)  # type: ignore[call-arg]


def known_versions() -> list[int]:
    return [int(v.name[1:]) for v in schema_versions()]


def latest_version() -> int:
    return max(known_versions())


def _line_of(root: yaml.Node | None, path: list[Any]) -> int:
    """1-based line of the key (or item) at a JSON path, or of its deepest existing parent."""
    node, line = root, 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == part), None)
            node = pair[1] if pair else None
            line = pair[0].start_mark.line + 1 if pair else line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _schema_name(leaf: str, contents: dict) -> str:
    top = leaf.split("/", 1)[0]
    if top in ("knowledge", "compositional_skills"):  # as upstream: its folder names are its schema names
        return top
    return "knowledge" if "document" in contents else "compositional_skills"


def read_version(contents: dict) -> int:
    """The schema version as InstructLab reads it: absent means 1; a non-integer is coerced, else 1."""
    raw = contents.get("version", 1)
    if isinstance(raw, int):
        return raw
    try:
        return int(raw)
    except (TypeError, ValueError):
        return 1


def validate_file(
    path: Path, leaf: str, display: str, docs: DocumentSource | None = None
) -> tuple[Recipe | None, list[Issue]]:
    """Validate one recipe file; return the Recipe when it has no errors (and is not empty)."""
    issues: list[Issue] = []

    def err(line: int, rule: str, message: str, hint_key: str | None = None, severity: str = "error") -> None:
        hint = _HINTS.get(hint_key or rule, "see the InstructLab taxonomy docs")
        issues.append(Issue(display, line, rule, message, hint, severity))

    if path.name != QNA_FILE:
        err(1, "file-name", f"recipe file is named {path.name!r}, not {QNA_FILE!r}")
        return None, issues
    text = path.read_text(encoding="utf-8")
    lint = [(p.line, p.rule or "syntax", p.desc) for p in linter.run(text, _YAMLLINT) if p.level == "error"]
    try:
        contents = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        for line, rule, desc in lint:
            err(line, rule, desc)
        if not any(i.rule == "syntax" for i in issues):
            mark = getattr(exc, "problem_mark", None)
            err(mark.line + 1 if mark else 1, "syntax", f"invalid YAML: {exc}")
        return None, issues
    if not contents:
        err(1, "empty", "the file is empty; it is skipped", severity="warning")
        return None, issues
    if not isinstance(contents, dict):
        err(1, "syntax", "the top level must be a mapping of keys to values")
        return None, issues
    version = read_version(contents)
    # InstructLab does not lint version 1 files: Carafe reports the findings, as warnings.
    for line, rule, desc in lint:
        err(line, rule, desc, severity="error" if version > 1 else "warning")
    if version not in known_versions():
        err(
            _line_of(root, ["version"]),
            "version",
            f"unknown schema version {contents.get('version')!r}; instructlab-schema knows {known_versions()}",
        )
        return None, issues
    name = _schema_name(leaf, contents)
    schema, registry = _schema(version, name)
    if schema.get("deprecated"):
        err(_line_of(root, ["version"]), "version", schema.get("description") or f"{name} v{version} is deprecated")
        return None, issues
    if version < (latest := latest_version()):
        missing = (
            "has no `version` key, so it is read as version 1" if "version" not in contents else f"is version {version}"
        )
        issues.append(
            Issue(
                display,
                _line_of(root, ["version"]),
                "version-deprecated",
                f"{name} {missing}, which InstructLab deprecates (still valid)",
                f"run `carafe taxonomy convert {display}` to rewrite it as version {latest}",
                "warning",
            )
        )
    validator = validator_for(schema)(schema, registry=registry)
    for ve in sorted(validator.iter_errors(contents), key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join(map(str, ve.absolute_path)) or "."
        msg = (
            f"{where}: needs at least {ve.validator_value} items"
            if ve.validator == "minItems"
            else f"{where}: {ve.message[-200:]}"
        )
        err(_line_of(root, list(ve.absolute_path)), f"schema.{ve.validator}", msg, str(ve.validator))
    sidecar = None
    try:
        sidecar = read_sidecar(path.parent)
    except (ValidationError, yaml.YAMLError) as exc:
        issues.append(
            Issue(f"{Path(display).parent / SIDECAR_FILE}", 1, "sidecar", str(exc).splitlines()[0], _HINTS["sidecar"])
        )
    if any(i.severity == "error" for i in issues):
        return None, issues
    recipe = recipe_from_contents(leaf, path, contents, sidecar, version)
    # A remote document is fetched at generation (a mirror, a clone); validation never needs the network.
    if recipe.document is not None:
        try:
            check_document_fields(recipe)
            if not is_remote(str(recipe.document.get("repo", ""))):
                (docs or DocumentSource()).read(recipe)
        except DocumentNotFound as exc:
            err(_line_of(root, ["document", exc.param or "repo"]), "document", exc.message)
            return None, issues
    return recipe, issues


def find_recipe_files(taxonomy: Path) -> list[Path]:
    """Every YAML file under the taxonomy's skill/knowledge folders (sidecars excepted)."""
    files: list[Path] = []
    for top in TAXONOMY_ROOTS:
        folder = taxonomy / top
        if folder.is_dir():
            files += [
                p
                for p in folder.rglob("*")
                if p.suffix in (".yaml", ".yml") and p.name not in (SIDECAR_FILE, "carafe.heldout.yaml")
            ]
    return sorted(files)


def validate_taxonomy(
    taxonomy: Path, only: list[Path] | None = None, docs: DocumentSource | None = None
) -> ValidationReport:
    """Validate every recipe under `taxonomy` (or only the given files); `docs` says where documents may be."""
    taxonomy = Path(taxonomy)
    if taxonomy.is_file():
        files, taxonomy = [taxonomy], _taxonomy_root_of(taxonomy)
    else:
        files = only if only is not None else find_recipe_files(taxonomy)
    recipes: list[Recipe] = []
    issues: list[Issue] = []
    if not files:
        issues.append(
            Issue(
                str(taxonomy),
                1,
                "empty",
                "no recipes found",
                f"add leaves as <{'|'.join(TAXONOMY_ROOTS)}>/<path>/{QNA_FILE}",
            )
        )
    for f in files:
        recipe, found = validate_file(f, leaf_of(f, taxonomy), str(f), docs)
        issues += found
        if recipe is not None:
            recipes.append(recipe)
    return ValidationReport(recipes, issues)


def leaf_of(file: Path, taxonomy: Path) -> str:
    """The leaf's path relative to the taxonomy root, e.g. "compositional_skills/hr/style"."""
    return file.parent.relative_to(taxonomy).as_posix() if file.is_relative_to(taxonomy) else file.parent.name


def _taxonomy_root_of(path: Path) -> Path:
    for parent in path.resolve().parents:
        if parent.name in TAXONOMY_ROOTS:
            return parent.parent
    return path.parent
