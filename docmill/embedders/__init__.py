"""Embedding providers and the factory that picks one from the config.

Providers register in a dict that refuses duplicates. Each built-in factory imports its module
only when called, so ``import docmill.embedders`` costs nothing and a provider's optional
dependency (fastembed, sentence-transformers) is needed only by the runs that use it.
"""

from __future__ import annotations

from collections.abc import Callable

from docmill.config import EmbeddingConfig
from docmill.embedders.base import Embedder
from docmill.errors import ConfigError

#: Builds an embedder from the embedding config and the caller's thread share (None = decide).
EmbedderFactory = Callable[[EmbeddingConfig, "int | None"], Embedder]

_REGISTRY: dict[str, EmbedderFactory] = {}


def register_provider(name: str, factory: EmbedderFactory) -> None:
    """Make ``embedding.provider: name`` build embedders with ``factory``; a name registers once."""
    if name in _REGISTRY:
        raise ValueError(f"embedding provider {name!r} is already registered")
    _REGISTRY[name] = factory


def available_providers() -> list[str]:
    """Names of the registered providers, sorted."""
    return sorted(_REGISTRY)


def create_embedder(cfg: EmbeddingConfig, threads: int | None = None) -> Embedder:
    """The embedder ``cfg`` describes.

    ``threads`` is the caller's share of this machine's CPUs (e.g. ``cpu_count // workers``); it
    is used when ``cfg.threads`` is unset, and an explicit ``embedding.threads`` wins over it.
    Raises ``ConfigError`` for an unknown provider or model, a missing optional package, or a
    ``dimensions``/``max_sequence_length`` the model cannot meet.
    """
    factory = _REGISTRY.get(cfg.provider)
    if factory is None:
        raise ConfigError(f"embedding.provider {cfg.provider!r} is not available in this version of docmill; "
                          f"available: {', '.join(available_providers())}")
    return factory(cfg, threads)


def _local(cfg: EmbeddingConfig, threads: int | None) -> Embedder:
    from docmill.embedders.local_onnx import LocalOnnxEmbedder

    return LocalOnnxEmbedder(cfg, threads)


def _fastembed(cfg: EmbeddingConfig, threads: int | None) -> Embedder:
    from docmill.embedders.fastembed_provider import FastEmbedEmbedder

    return FastEmbedEmbedder(cfg, threads)


def _sentence_transformers(cfg: EmbeddingConfig, threads: int | None) -> Embedder:
    from docmill.embedders.sentence_transformers_provider import SentenceTransformersEmbedder

    return SentenceTransformersEmbedder(cfg, threads)


def _openai(cfg: EmbeddingConfig, threads: int | None) -> Embedder:
    from docmill.embedders.openai_http import OpenAIHTTPEmbedder

    return OpenAIHTTPEmbedder(cfg, threads)


register_provider("local", _local)
register_provider("fastembed", _fastembed)
register_provider("sentence_transformers", _sentence_transformers)
register_provider("openai", _openai)

__all__ = ["Embedder", "EmbedderFactory", "available_providers", "create_embedder", "register_provider"]
