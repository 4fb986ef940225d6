"""One root exception; its two branches decide retry versus dead-letter."""

from __future__ import annotations


class DocmillError(Exception):
    """Root of every error docmill raises on purpose."""


class TransientError(DocmillError):
    """A failure worth retrying later: timeout, 429, connection reset, database restart."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimitedError(TransientError):
    """A provider answered 429 or 503: every worker slows down; never a dead letter."""


class PermanentError(DocmillError):
    """A failure that retrying cannot fix: unsupported format, corrupt file, too large, 404."""


class UnsupportedFormatError(PermanentError):
    """The bytes are not a format docmill can parse."""


class DocumentVanishedError(PermanentError):
    """The document was deleted from its source after discovery: it is removed, not dead-lettered."""


class CorruptDocumentError(PermanentError):
    """The format is known but the file is broken, truncated or encrypted."""


class DocumentTooLargeError(PermanentError):
    """The document exceeds ``max_file_size``."""


class SourceError(DocmillError):
    """A source cannot be listed or read as a whole (missing root, bad credentials)."""


class ConfigError(DocmillError):
    """The configuration is invalid; the message names the key and the file."""


class StoreError(DocmillError):
    """The store cannot be used (unreachable, missing extension, schema newer than the code)."""


class StoreUnavailableError(StoreError, TransientError):
    """The store stopped taking writes (connection lost for good, disk full, read-only): no document's
    fault, so a worker stops at once instead of failing its documents one by one against it."""


def error_class(exc: BaseException) -> str:
    """Short class name used to group failures in the dead-letter queue."""
    return type(exc).__name__
