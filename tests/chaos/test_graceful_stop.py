"""SIGTERM mid-run: workers stop claiming, finish or release what they hold, and exit 0; nothing is lost."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import yaml

from tests.chaos.harness import Fleet, assert_exactly_once, query, write_config, write_small_corpus
from tests.fakes.openai_server import FakeEmbeddingServer

DOCS = 80


def test_sigterm_releases_held_documents_and_a_rerun_finishes(tmp_path: Path, backend_url: str) -> None:
    write_small_corpus(tmp_path / "docs", DOCS, paragraphs=2)
    fleet = Fleet(write_config(tmp_path / "cfg.yaml", tmp_path / "docs", backend_url), tmp_path)
    fleet.start(1, extra_args=["--workers", "2"])
    parent = fleet.procs[0]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                done = query(backend_url, "SELECT count(*) FROM documents WHERE state = 'done'")[0][0]
            except Exception:
                continue
            if done >= 5:
                break
        # A plain `kill` reaches only the parent; it forwards the signal to its worker processes.
        fleet.kill(parent, signal.SIGTERM)
        fleet.wait(timeout=120)
    finally:
        fleet.stop_all()
    assert parent.returncode == 0, fleet.logs()
    states = dict(query(backend_url, "SELECT state, count(*) FROM documents GROUP BY state"))
    assert states.get("claimed", 0) == 0, states
    assert states.get("pending", 0) > 0, "the stop should have come before the end of the run"
    # Released documents did not spend an attempt: every pending one is back at zero.
    assert query(backend_url, "SELECT max(attempts) FROM documents WHERE state = 'pending'")[0][0] == 0
    assert query(backend_url, "SELECT count(*) FROM workers WHERE stopped_at IS NULL")[0][0] == 0

    rerun = Fleet(fleet.config, tmp_path, tag="rerun")
    rerun.start(1)
    rerun.wait(timeout=240)
    assert_exactly_once(backend_url, DOCS)


def test_a_second_sigint_exits_at_once_and_gives_every_claim_back(tmp_path: Path, backend_url: str) -> None:
    write_small_corpus(tmp_path / "docs", DOCS)
    # A slow provider: the first signal's finishing waits on a request when the second one comes.
    with FakeEmbeddingServer(latency=3.0) as server:
        config = write_config(tmp_path / "cfg.yaml", tmp_path / "docs", backend_url, claim_timeout=600,
                              heartbeat_interval=5, claim_batch_size=8)
        data = yaml.safe_load(config.read_text())
        data["embedding"] = {"provider": "openai", "model": "fake", "base_url": server.base_url, "dimensions": 32,
                             "batch_size": 4}
        config.write_text(yaml.safe_dump(data))
        fleet = Fleet(config, tmp_path)
        fleet.start(1)
        parent = fleet.procs[0]
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and server.count(200) < 2:
                time.sleep(0.05)
            fleet.kill(parent, signal.SIGINT)
            time.sleep(1.0)  # the worker is finishing now, waiting on a request
            fleet.kill(parent, signal.SIGINT)  # an impatient Ctrl-C Ctrl-C
            fleet.wait(timeout=60)
        finally:
            fleet.stop_all()
        states = dict(query(backend_url, "SELECT state, count(*) FROM documents GROUP BY state"))
        # Leases far longer than the test: only giving the claims back could free them.
        assert states.get("claimed", 0) == 0, (states, fleet.logs())
        assert states.get("pending", 0) > 0, "the stop should have come before the end of the run"
        server.latency = 0.0
        rerun = Fleet(config, tmp_path, tag="rerun")
        rerun.start(1)
        rerun.wait(timeout=240)  # far less than the leases: it did not wait for one to lapse
    assert_exactly_once(backend_url, DOCS)
