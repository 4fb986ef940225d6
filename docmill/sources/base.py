"""The source Protocol: list documents cheaply, then fetch one's bytes when a worker holds it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from docmill.models import DocumentRef


class Source(Protocol):
    """A place documents come from."""

    name: str

    def check(self) -> None:
        """Raise SourceError when the source cannot be listed at all (root gone, not a folder, no access)."""

    def discover(self) -> Iterator[DocumentRef]:
        """Yield every document with a cheap version fingerprint; raise SourceError if the root is gone."""

    def fetch(self, key: str) -> bytes:
        """The document's bytes; PermanentError when it is too large, unreadable or gone."""
