"""The ingest progress line printed when stderr is no terminal."""

from __future__ import annotations

import re

import pytest

from docmill.cli import _BarProgress


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
