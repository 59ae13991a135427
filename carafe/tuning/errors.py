"""Errors of the tuning package: each names the recipe (or leaf) and the cause."""

from carafe.errors import CarafeError, Conflict, InvalidInput, NotFound, Unavailable


class TuningError(CarafeError):
    """Base of tuning-package errors."""


class RecipeInvalid(InvalidInput, TuningError):
    """A recipe failed validation; ``issues`` holds every finding."""

    def __init__(self, message: str, issues: list | None = None) -> None:
        super().__init__(message, code="recipe_invalid")
        self.issues = issues or []


class DocumentNotFound(NotFound, TuningError):
    """A knowledge recipe's document folder, repo, commit or pattern does not resolve."""


class TeacherUnavailable(Unavailable, TuningError):
    """The teacher endpoint is down, or kept answering junk after all retries."""


class EmptyLeaf(InvalidInput, TuningError):
    """A leaf produced no usable sample; the message names the leaf and the stage."""


class StageMissing(NotFound, TuningError):
    """A stage needs the output of an earlier stage that has not run."""


class GateFailed(Conflict, TuningError):
    """The evaluation gate refused to publish the adapter."""
