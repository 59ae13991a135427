"""The state package's error kinds (mapped to HTTP by the gateway, to messages by the CLI)."""

from __future__ import annotations

from carafe.errors import Unavailable


class StateUnavailable(Unavailable):
    """The state database or the counter store cannot be reached (HTTP 503)."""
