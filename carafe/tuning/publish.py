"""Publish an evaluated adapter into the registry as a new version with its full manifest.

Promotion to `stable` stays an admin act (`carafe adapters promote`); the registry makes
only the very first version of a name stable by itself.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

from carafe.adapters.manifest import MANIFEST_FILE, BaseModelRef, DataRef, Manifest, SourceRef
from carafe.adapters.registry import Registry
from carafe.tuning.recipe import Recipe, Sidecar


def adapter_identity(root: Sidecar | None, recipes: list[Recipe], name: str | None) -> tuple[str, str, str]:
    """(name, kind, description) from --name, the taxonomy's root sidecar, then the leaves."""
    from carafe.tuning.errors import RecipeInvalid
    from carafe.tuning.preflight import identity

    found = identity(root, recipes, name)
    if found is None:
        raise RecipeInvalid(
            "the adapter has no name: put `adapter: <name>` in the taxonomy's carafe.adapter.yaml or pass --name"
        )
    return found.name, found.kind, found.description


def build_manifest(
    *,
    base: BaseModelRef,
    name: str,
    kind: str,
    description: str,
    recipes: list[Recipe],
    taxonomy: Path,
    data_sha256: str,
    data_size: int,
    data_bytes: int,
    teacher: str,
    hyperparameters: dict[str, Any],
    metrics: dict[str, Any],
) -> Manifest:
    return Manifest(
        name=name,
        version=0,
        base_model=base,
        kind=kind,
        description=description,
        recipes=[SourceRef(path=_rel(r.path, taxonomy), sha256=r.sha256) for r in recipes],
        data=DataRef(sha256=data_sha256, size=data_size),
        teacher=teacher,
        hyperparameters=hyperparameters,
        metrics=metrics,
        created_at=dt.datetime.now(dt.UTC),
        data_bytes=data_bytes,
    )


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def publish(
    adapter_dir: Path, manifest: Manifest, registry_dir: Path, staging: Path, *, actor: str = "carafe-tune"
) -> Manifest:
    """Copy the PEFT files and manifest into the registry as the next version; return the stored manifest."""
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(adapter_dir, staging)
    (staging / "README.md").unlink(missing_ok=True)
    (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
    try:
        version = Registry(registry_dir).add(staging, actor=actor, name=manifest.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return version.manifest
