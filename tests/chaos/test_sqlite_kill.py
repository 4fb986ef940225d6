"""SIGKILLed workers on one SQLite file: their documents are taken over and every document ends done once."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from tests.chaos.harness import Fleet, assert_exactly_once, query, write_config, write_small_corpus

DOCS = 60


def _wait_for_claims(db_url: str, fleet: Fleet) -> subprocess.Popen[bytes]:
    """The first live worker seen holding documents."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            holders = query(db_url, "SELECT w.pid FROM workers w JOIN documents d ON d.claimed_by = w.worker_id "
                                    "WHERE d.state = 'claimed'")
        except Exception:
            continue
        victim = next((p for p in fleet.alive() if any(p.pid == h[0] for h in holders)), None)
        if victim is not None:
            return victim
    raise AssertionError(f"no worker held documents\n{fleet.logs()}")


def test_sigkilled_worker_documents_are_taken_over(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write_small_corpus(docs, DOCS)
    db_url = f"sqlite:///{tmp_path / 'store.db'}"
    fleet = Fleet(write_config(tmp_path / "cfg.yaml", docs, db_url), tmp_path)
    fleet.start(3)
    try:
        # Kill a worker only once it holds documents, so its claims must be taken over.
        fleet.kill(_wait_for_claims(db_url, fleet), signal.SIGKILL)
        fleet.wait(timeout=180)
    finally:
        fleet.stop_all()
    assert fleet.killed == 1
    assert_exactly_once(db_url, DOCS)
    lost = query(db_url, "SELECT count(*) FROM attempts WHERE outcome = 'lost'")[0][0]
    assert lost >= 1, "the killed worker's claims should show up as lost attempts"


def test_a_rerun_after_a_sigkill_goes_on_at_once(tmp_path: Path) -> None:
    """`docmill ingest` killed mid-run, then started again: the dead process's claims come back now,
    not when their hour-long leases lapse (its pid is gone on this machine), and leadership too."""
    docs = tmp_path / "docs"
    write_small_corpus(docs, 30, paragraphs=3)
    db_url = f"sqlite:///{tmp_path / 'store.db'}"
    fleet = Fleet(write_config(tmp_path / "cfg.yaml", docs, db_url, claim_timeout=3600, heartbeat_interval=1,
                               claim_batch_size=4), tmp_path)
    fleet.start(1)
    try:
        fleet.kill(_wait_for_claims(db_url, fleet), signal.SIGKILL)
        held = query(db_url, "SELECT count(*) FROM documents WHERE state = 'claimed'")[0][0]
        fleet.start(1)
        fleet.wait(timeout=300)  # an hour if the claims waited for their leases
    finally:
        fleet.stop_all()
    assert_exactly_once(db_url, 30)
    lost = query(db_url, "SELECT error_message FROM attempts WHERE outcome = 'lost'")
    assert len(lost) >= held >= 1
    assert all("exited while holding the document" in m for (m,) in lost), lost
    assert "taken back now" in fleet.logs()
