"""Load named SQL blocks: a line ``-- name --`` starts a block, the next comment line describes it."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_HEADER = re.compile(r"^--\s*([a-z_][a-z0-9_]*)\s*--\s*$", re.MULTILINE)


@cache
def load_queries(package: str, filename: str = "queries.sql") -> dict[str, str]:
    """Parse ``package/filename`` into {block name: SQL text}; duplicate names are an error."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{package}/{filename}: query {name!r} is defined twice")
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";")
    return queries


def read_script(package: str, filename: str) -> str:
    """The whole text of a SQL script shipped in ``package``."""
    return resources.files(package).joinpath(filename).read_text(encoding="utf-8")
