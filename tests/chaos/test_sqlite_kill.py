"""Three workers on one SQLite file; one is SIGKILLed mid-run; every document still ends done once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.chaos.harness import Fleet, assert_exactly_once, query, write_config, write_small_corpus

DOCS = 60


def test_sigkilled_worker_documents_are_taken_over(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write_small_corpus(docs, DOCS)
    db_url = f"sqlite:///{tmp_path / 'store.db'}"
    fleet = Fleet(write_config(tmp_path / "cfg.yaml", docs, db_url), tmp_path)
    fleet.start(3)
    try:
        deadline = time.monotonic() + 120
        # Kill a worker only once it holds documents, so its claims must be taken over.
        victim = None
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                holders = query(db_url, "SELECT w.pid FROM workers w JOIN documents d ON d.claimed_by = w.worker_id "
                                        "WHERE d.state = 'claimed'")
            except Exception:
                continue
            victim = next((p for p in fleet.alive() if any(p.pid == h[0] for h in holders)), None)
        assert victim is not None, fleet.logs()
        fleet.kill(victim, signal.SIGKILL)
        fleet.wait(timeout=180)
    finally:
        fleet.stop_all()
    assert fleet.killed == 1
    assert_exactly_once(db_url, DOCS)
    lost = query(db_url, "SELECT count(*) FROM attempts WHERE outcome = 'lost'")[0][0]
    assert lost >= 1, "the killed worker's claims should show up as lost attempts"
