"""Source registry: one module per kind of source, looked up by the config's ``type``."""

from __future__ import annotations

from collections.abc import Callable

from docmill.config import SourceConfig
from docmill.errors import ConfigError
from docmill.sources.base import Source
from docmill.sources.local import LocalSource

_REGISTRY: dict[str, Callable[[SourceConfig], Source]] = {}


def register(kind: str, factory: Callable[[SourceConfig], Source]) -> None:
    """Add a source kind; a second registration of the same kind is a bug."""
    if kind in _REGISTRY:
        raise ValueError(f"source type {kind!r} is already registered")
    _REGISTRY[kind] = factory


register("local", LocalSource)
register("file", LocalSource)


def create_source(cfg: SourceConfig) -> Source:
    """Build the source a config entry describes."""
    try:
        factory = _REGISTRY[cfg.type]
    except KeyError:
        raise ConfigError(f"content_sources: unknown type {cfg.type!r} (known: {', '.join(_REGISTRY)})") from None
    return factory(cfg)
