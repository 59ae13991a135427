"""carafe.tuning: recipes → validation → synthetic data → multi-phase LoRA → evaluation → publish.

The public door::

    from carafe.tuning import Workspace, validate_taxonomy, changed_leaves
    ws = Workspace(cfg.tuning, taxonomy, out_dir, models_dir, registry_dir)
    recipes = ws.recipes()
    generate_stage(ws, recipes); train_stage(ws); eval_stage(ws, recipes); publish_stage(ws, recipes)
"""

from carafe.tuning.config import TuningConfig
from carafe.tuning.diff import changed_leaves
from carafe.tuning.errors import (
    DocumentNotFound,
    EmptyLeaf,
    GateFailed,
    RecipeInvalid,
    StageMissing,
    TeacherUnavailable,
    TuningError,
)
from carafe.tuning.pipeline import Workspace, eval_stage, generate_stage, publish_stage, train_stage
from carafe.tuning.validate import Issue, ValidationReport, validate_taxonomy

__all__ = [
    "TuningConfig", "Workspace", "validate_taxonomy", "changed_leaves", "generate_stage", "train_stage", "eval_stage",
    "publish_stage", "Issue", "ValidationReport", "TuningError", "RecipeInvalid", "DocumentNotFound", "TeacherUnavailable",
    "EmptyLeaf", "StageMissing", "GateFailed",
]
