"""What ingest prints: the progress line when stderr is no terminal, and the summary."""

from __future__ import annotations

import re

import pytest

from docmill.cli import _BarProgress, _print_summary
from docmill.runner import IngestSummary


def test_removed_documents_never_make_the_rate_negative(capsys: pytest.CaptureFixture[str]) -> None:
    progress = _BarProgress()
    progress.tty = False
    with progress:
        progress.update(10, 10, {"done": 10})  # done before this command: not its work
        progress.last_line = 0.0
        progress.update(4, 6, {"done": 4})  # discovery removed six vanished documents
        progress.last_line = 0.0
        progress.update(6, 6, {"done": 6})  # then two were processed
    rates = [float(r) for r in re.findall(r"([-\d.]+) docs/s", capsys.readouterr().err)]
    assert len(rates) == 3 and rates[0] == 0 and rates[1] == 0 and rates[2] > 0
    assert progress.finished_here == 2


def test_a_stopped_ingest_says_what_is_left_and_how_to_go_on(capsys: pytest.CaptureFixture[str]) -> None:
    summary = IngestSummary(run_id="r", counts={"pending": 103, "claimed": 0, "done": 17}, documents=120, chunks=170,
                            seconds=15.6, docs_per_sec=1.1, processed=17, done=17)
    _print_summary(summary)
    assert "stopped before the end: 103 documents still to do; run the same command again" in capsys.readouterr().err
    _print_summary(IngestSummary(run_id="r", counts={"done": 120}, documents=120, chunks=170, seconds=1.0,
                                 docs_per_sec=1.0))
    assert "stopped" not in capsys.readouterr().err
