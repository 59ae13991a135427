"""The root of every package's exception hierarchy.

Each package subclasses these *kinds* (``adapters.errors.AdapterNotFound`` is a
:class:`NotFound`); the gateway maps a kind to an HTTP status and an OpenAI-style
error body in one place (``gateway/errors.py``), so packages never speak HTTP.
"""

from __future__ import annotations


class CarafeError(Exception):
    """Base class of every error Carafe raises on purpose.

    ``param`` names the offending field (OpenAI's ``error.param``) and ``code`` a
    short machine-readable reason (OpenAI's ``error.code``).
    """

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidInput(CarafeError):
    """The caller sent something that cannot be used (HTTP 400)."""


class Unauthenticated(CarafeError):
    """No credentials, or credentials that match nobody (HTTP 401)."""


class Forbidden(CarafeError):
    """A known caller asked for something it may not use (HTTP 403)."""


class NotFound(CarafeError):
    """A named thing (model, adapter, version, document) does not exist (HTTP 404)."""


class Conflict(CarafeError):
    """The request clashes with the current state (HTTP 409)."""


class TooLarge(CarafeError):
    """A body, prompt or requested length exceeds a configured limit (HTTP 413)."""


class RateLimited(CarafeError):
    """The caller exceeded its rate limit (HTTP 429)."""

    def __init__(self, message: str, *, retry_after: float, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ContentBlocked(CarafeError):
    """A guardrail blocked the request or the answer (HTTP 400, code ``content_filter``)."""


class Unavailable(CarafeError):
    """A backend (engine, vector store, teacher) is down or not ready (HTTP 503)."""
