"""XLSX, PPTX, EPUB and ODT files through the CLI as a user runs it: ingested, then found by search."""

from __future__ import annotations

import json
from pathlib import Path

from tests.corpus import write_office_corpus
from tests.e2e.test_cli import ingest_json, run


def test_office_files_are_ingested_and_each_is_found_by_a_phrase_of_its_own(tmp_path: Path) -> None:
    phrases = write_office_corpus(tmp_path / "docs")
    summary = ingest_json(tmp_path, "docs", "--workers", "1")
    assert summary["counts"]["done"] == len(phrases) == 4
    assert summary["counts"]["dead"] == 0
    documents = json.loads(run("documents", "--json", cwd=tmp_path).stdout)
    assert {d["state"] for d in documents} == {"done"} and all(d["chunks"] > 0 for d in documents)
    for relative, phrase in phrases.items():
        hits = json.loads(run("search", phrase, "-k", "3", "--json", cwd=tmp_path).stdout)
        assert hits and hits[0]["uri"].endswith(relative), (phrase, [h["uri"] for h in hits])
        assert phrase in " ".join(hits[0]["text"].split()), hits[0]["text"]
