"""A deterministic synthetic corpus: Markdown files of a few paragraphs, every sentence distinct."""

from __future__ import annotations

import random
from pathlib import Path

_VOCABULARY = """
system data queue worker lease token vector search index chunk document parser
model batch cluster machine network latency throughput memory storage backup retry failure
signal process thread leader election heartbeat claim store commit rollback schema migration
replica shard cache eviction budget limit window metric alert dashboard trace span
log level config
"""
_WORDS = tuple(_VOCABULARY.split())


def _sentence(rng: random.Random, i: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 18))]
    return f"{' '.join(words).capitalize()} {i}."


def write_corpus(root: Path, documents: int, paragraphs: int = 4, seed: int = 7) -> Path:
    """Write ``documents`` Markdown files (about 300 tokens each with 4 paragraphs) under ``root``."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    counter = 0
    for d in range(documents):
        lines = [f"# Document {d}", ""]
        for p in range(paragraphs):
            lines += [f"## Part {p}", ""]
            sentences = []
            for _ in range(4):
                counter += 1
                sentences.append(_sentence(rng, counter))
            lines += [" ".join(sentences), ""]
        folder = root / f"group_{d // 100:03d}"
        folder.mkdir(exist_ok=True)
        (folder / f"doc_{d:05d}.md").write_text("\n".join(lines))
    return root
