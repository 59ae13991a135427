"""carafe.tuning: recipes → validation → synthetic data → multi-phase LoRA → evaluation → publish.

The public door::

    from carafe.tuning import Workspace, validate_taxonomy, changed_leaves
    ws = Workspace(cfg.tuning, taxonomy, out_dir, models_dir, registry_dir)
    recipes = ws.recipes()
    generate_stage(ws, recipes); train_stage(ws); eval_stage(ws, recipes); publish_stage(ws, recipes)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from carafe._lazy import lazy_getattr
from carafe.tuning.config import TuningConfig
from carafe.tuning.errors import (
    DocumentNotFound,
    EmptyLeaf,
    GateFailed,
    RecipeInvalid,
    StageMissing,
    TeacherUnavailable,
    TuningError,
)

if TYPE_CHECKING:
    from carafe.tuning.diff import changed_leaves
    from carafe.tuning.pipeline import Workspace, eval_stage, generate_stage, publish_stage, train_stage
    from carafe.tuning.validate import Issue, ValidationReport, validate_taxonomy

_LAZY = {
    "changed_leaves": "carafe.tuning.diff",
    "Workspace": "carafe.tuning.pipeline",
    "eval_stage": "carafe.tuning.pipeline",
    "generate_stage": "carafe.tuning.pipeline",
    "publish_stage": "carafe.tuning.pipeline",
    "train_stage": "carafe.tuning.pipeline",
    "Issue": "carafe.tuning.validate",
    "ValidationReport": "carafe.tuning.validate",
    "validate_taxonomy": "carafe.tuning.validate",
}

__all__ = [
    "DocumentNotFound",
    "EmptyLeaf",
    "GateFailed",
    "Issue",
    "RecipeInvalid",
    "StageMissing",
    "TeacherUnavailable",
    "TuningConfig",
    "TuningError",
    "ValidationReport",
    "Workspace",
    "changed_leaves",
    "eval_stage",
    "generate_stage",
    "publish_stage",
    "train_stage",
    "validate_taxonomy",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
