"""The benchmark corpus generator (it lives in ``docmill.benchmark`` so ``docmill benchmark`` has it too)."""

from __future__ import annotations

from docmill.benchmark import write_corpus

__all__ = ["write_corpus"]
