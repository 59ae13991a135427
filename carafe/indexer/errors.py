"""Errors of the indexer package."""

from carafe.errors import CarafeError, Conflict, InvalidInput, NotFound, Unavailable


class IndexerError(CarafeError):
    """Base of indexer-package errors."""


class DocumentRejected(InvalidInput, IndexerError):
    """One document cannot be indexed (unreadable, too large, bad front matter...).

    The sync reports it with its path and this message, and goes on with the rest."""


class SourceNotFound(NotFound, IndexerError):
    """No configured source by that name, or its folder does not exist."""


class StoreUnavailable(Unavailable, IndexerError):
    """The Qdrant store cannot be opened or reached."""


class StoreBusy(Conflict, IndexerError):
    """The embedded store is held by another process (a running gateway or sync)."""
