"""Errors of the guardrails."""

from carafe.errors import CarafeError, InvalidInput


class GuardError(CarafeError):
    """Base of guardrail errors (a *block* is not an error here: it is a verdict)."""


class UnknownPolicy(InvalidInput, GuardError):
    """A route or command names a guard policy that carafe.yaml does not define."""


class FittedModelError(GuardError):
    """A shipped or configured fitted model is missing or does not match its digest."""
