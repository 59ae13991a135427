"""Errors of the adapters package."""

from carafe.errors import CarafeError, Conflict, InvalidInput, NotFound, Unavailable


class AdapterError(CarafeError):
    """Base of adapter-package errors."""


class AdapterNotFound(NotFound, AdapterError):
    """No adapter (or version) by that name."""


class AdapterConflict(Conflict, AdapterError):
    """A name is already taken by something else, or a change races another."""


class InvalidAdapter(InvalidInput, AdapterError):
    """A path is not a valid PEFT adapter for the served base model."""


class EngineUnavailable(Unavailable, AdapterError):
    """The engine is not ready, or its backend (vLLM) cannot be reached."""


class EngineOverloaded(EngineUnavailable):
    """The engine's waiting line is full (``adapters.engine.max_waiting``): retry shortly."""


class ModelNotAvailable(Unavailable, AdapterError):
    """The base model's weights cannot be found locally."""
