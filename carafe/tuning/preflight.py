"""Checks that run before any work: everything `publish` needs is known at the start.

A run that generates and trains for minutes and then fails at publish because the adapter has
no name, or was trained on a base the registry does not serve, wastes the user's time. These
checks run in `carafe taxonomy validate` and first thing in `carafe tune run`; each finding is
an :class:`Issue` naming the file, the key and the fix. Sidecar keys are either honoured
(a leaf's `adapter` names the adapter when the root does not) or refused here, never ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from carafe.tuning.recipe import SIDECAR_FILE, Recipe, Sidecar, read_sidecar
from carafe.tuning.validate import Issue, _line_of


@dataclass(frozen=True)
class Identity:
    """What the published adapter will be called and be."""

    name: str
    kind: str
    description: str


def _key_line(folder: Path, key: str) -> int:
    path = folder / SIDECAR_FILE
    try:
        return _line_of(yaml.compose(path.read_text(encoding="utf-8")), [key])
    except (OSError, yaml.YAMLError):
        return 1


def _issue(folder: Path, key: str, message: str, hint: str) -> Issue:
    return Issue(str(folder / SIDECAR_FILE), _key_line(folder, key), f"sidecar.{key}", message, hint)


def adapter_name(root: Sidecar | None, recipes: list[Recipe], name: str | None) -> str | None:
    """--name, else the root sidecar's `adapter`, else the one name the leaves' sidecars agree on."""
    leaf_names = {r.sidecar.adapter for r in recipes if r.sidecar.adapter}
    return name or (root.adapter if root else None) or (leaf_names.pop() if len(leaf_names) == 1 else None)


def identity(root: Sidecar | None, recipes: list[Recipe], name: str | None) -> Identity | None:
    """(name, kind, description) of the adapter, or None when it has no name."""
    found = adapter_name(root, recipes, name)
    if not found:
        return None
    kinds = {r.kind for r in recipes}
    kind = (root.kind if root and root.kind else None) or (kinds.pop() if len(kinds) == 1 else "skill")
    description = (root.description if root and root.description else None) or "; ".join(
        r.sidecar.description or r.task_description for r in recipes
    )
    return Identity(found, kind, description)


def sidecar_issues(taxonomy: Path, recipes: list[Recipe], name: str | None = None) -> list[Issue]:
    """Sidecar keys that would be ignored or conflict, and a missing adapter name."""
    issues: list[Issue] = []
    try:
        root = read_sidecar(taxonomy)
    except Exception as exc:
        return [_issue(taxonomy, "adapter", str(exc).splitlines()[0], "fix the root carafe.adapter.yaml")]
    if root and root.signoff:
        issues.append(
            _issue(
                taxonomy,
                "signoff",
                "`signoff` at the taxonomy root is not read: a sign-off belongs to a style leaf",
                "move `signoff` into the style leaf's carafe.adapter.yaml (with `kind: style`)",
            )
        )
    for r in recipes:
        folder = r.path.parent
        if r.sidecar.signoff and r.kind != "style":
            issues.append(
                _issue(
                    folder,
                    "signoff",
                    f"`signoff` is only checked in style leaves, and {r.leaf} is {r.kind}",
                    "add `kind: style` to this sidecar, or remove `signoff`",
                )
            )
        chosen = adapter_name(root, recipes, name)
        if r.sidecar.adapter and chosen and r.sidecar.adapter != chosen:
            issues.append(
                _issue(
                    folder,
                    "adapter",
                    f"this leaf names adapter {r.sidecar.adapter!r} but the run publishes {chosen!r} "
                    "(one taxonomy trains one adapter)",
                    f"remove `adapter` here, or set `adapter: {r.sidecar.adapter}` in the taxonomy's "
                    f"{SIDECAR_FILE} and put the other leaves in their own taxonomy",
                )
            )
    if not name and not (root and root.adapter):
        leaf_names = sorted({r.sidecar.adapter for r in recipes if r.sidecar.adapter})
        if not leaf_names:
            issues.append(
                Issue(
                    str(taxonomy / SIDECAR_FILE),
                    1,
                    "sidecar.adapter",
                    "the adapter has no name, so `carafe tune publish` would fail after training",
                    f"create {taxonomy / SIDECAR_FILE} with `adapter: <name>` (and `kind`, `description`), "
                    "or pass --name",
                )
            )
        elif len(leaf_names) > 1:
            issues.append(
                Issue(
                    str(taxonomy / SIDECAR_FILE),
                    1,
                    "sidecar.adapter",
                    f"leaves name different adapters {leaf_names}; one taxonomy publishes one adapter",
                    f"set `adapter: <name>` in {taxonomy / SIDECAR_FILE}, or pass --name",
                )
            )
    return issues


def base_issues(base_model: str, registry_dir: Path, rank: int, max_rank: int) -> list[Issue]:
    """The base the run trains on must exist and be the one the registry's gateway serves."""
    from carafe.adapters.registry import Registry
    from carafe.errors import CarafeError
    from carafe.tuning.base_model import base_ref

    where = "carafe.yaml adapters.engine.model"
    try:
        base = base_ref(base_model)
    except CarafeError as exc:
        return [Issue(where, 1, "base-model", exc.message, "install the base model or fix adapters.engine.model")]
    issues = []
    served = Registry(registry_dir).base
    if served is not None and served.digest != base.digest:
        issues.append(
            Issue(
                where,
                1,
                "base-model",
                f"the run would train on {base.id!r} ({base.digest}) but the registry's gateway serves "
                f"{served.id!r} ({served.digest}); the adapter would be refused at publish",
                "set adapters.engine.model (or tuning.training.base_model) to the served base",
            )
        )
    if rank > max_rank:
        issues.append(
            Issue(
                "carafe.yaml tuning.training",
                1,
                "lora-rank",
                f"LoRA rank {rank} is above adapters.engine.max_lora_rank {max_rank}; the registry would refuse it",
                f"lower tuning.training.knowledge.rank and skills.rank to {max_rank} or less",
            )
        )
    return issues
