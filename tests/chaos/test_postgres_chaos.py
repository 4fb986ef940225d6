"""Distributed proofs on a real PostgreSQL: random SIGKILLs, a zombie worker, leader failover, a database
restart, two "machines" over TCP, and 50 worker processes. Every worker is a real ``docmill ingest``."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest
import yaml

from tests.chaos.harness import Fleet, assert_exactly_once, query, write_config, write_small_corpus
from tests.fakes.openai_server import FakeEmbeddingServer

pytestmark = pytest.mark.slow


def _holders(db_url: str) -> dict[int, int]:
    """{pid: documents it holds claimed}."""
    rows = query(db_url, "SELECT w.pid, count(*) FROM documents d JOIN workers w ON w.worker_id = d.claimed_by "
                         "WHERE d.state = 'claimed' GROUP BY w.pid")
    return {int(pid): int(n) for pid, n in rows}


def _wait_for(predicate, timeout: float, what: str, fleet: Fleet) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.05)
    fleet.stop_all()
    raise AssertionError(f"timed out waiting for {what}\n{fleet.logs()}")


def test_random_sigkills_every_document_exactly_once(tmp_path: Path, fresh_pg_url: str) -> None:
    docs = 400
    write_small_corpus(tmp_path / "docs", docs, paragraphs=3)
    # Every SIGKILL costs each document its victim held one attempt (a worker cannot tell whether a document
    # killed it), and this test kills ~25 times in 40 s, often a fresh worker holding a full claim budget:
    # enough attempts that only a real poison document would be buried.
    fleet = Fleet(write_config(tmp_path / "cfg.yaml", tmp_path / "docs", fresh_pg_url, max_retries=40), tmp_path)
    rng = random.Random(42)
    fleet.start(4)
    try:
        started = time.monotonic()
        # Kill a random worker every 1-2 s and start a replacement, for as long as work remains.
        while time.monotonic() - started < 40:
            time.sleep(rng.uniform(1.0, 2.0))
            try:
                # Counted from the done ones: before discovery the table is empty, not finished.
                remaining = docs - query(fresh_pg_url, "SELECT count(*) FROM documents WHERE state = 'done'")[0][0]
            except Exception:
                remaining = docs
            alive = fleet.alive()
            if remaining == 0 or not alive:
                break
            fleet.kill(rng.choice(alive))
            fleet.start(1)
        fleet.wait(timeout=240)
    finally:
        fleet.stop_all()
    assert fleet.killed >= 3, "the killer should have struck several times"
    assert_exactly_once(fresh_pg_url, docs)
    edges = query(fresh_pg_url, "SELECT count(*) FROM relationships")[0][0]
    assert edges > 0


def test_zombie_worker_is_fenced(tmp_path: Path, fresh_pg_url: str) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    # Longer documents make a batch take long enough to freeze a worker in the middle of it.
    for i in range(24):
        (docs / f"long_{i:02d}.txt").write_text(
            "\n\n".join(f"Paragraph {p} of report {i}: the harbour crane {p} lifted {i * p} containers "
                        f"while the tide gauge read {p % 7} metres and gulls circled." * 6 for p in range(12)))
    fleet = Fleet(write_config(tmp_path / "cfg.yaml", docs, fresh_pg_url, claim_batch_size=4), tmp_path)
    fleet.start(1)
    zombie = fleet.procs[0]
    try:
        held: list[tuple[int]] = []

        def frozen_with_claims() -> bool:
            nonlocal held
            if not _holders(fresh_pg_url).get(zombie.pid):
                return False
            zombie.send_signal(signal.SIGSTOP)
            held = query(fresh_pg_url, f"SELECT d.id FROM documents d JOIN workers w ON w.worker_id = d.claimed_by "
                                       f"WHERE d.state = 'claimed' AND w.pid = {zombie.pid}")
            if not held:
                zombie.send_signal(signal.SIGCONT)
            return bool(held)

        _wait_for(frozen_with_claims, 120, "the zombie to hold documents", fleet)
        fleet.start(1)  # the healthy worker takes the zombie's documents once their leases lapse
        ids = ",".join(str(r[0]) for r in held)
        _wait_for(lambda: query(fresh_pg_url, f"SELECT count(*) FROM documents WHERE id IN ({ids}) "
                                              "AND state = 'done'")[0][0] == len(held),
                  180, "the healthy worker to finish the zombie's documents", fleet)
        zombie.send_signal(signal.SIGCONT)
        fleet.wait(timeout=240)
    finally:
        zombie.send_signal(signal.SIGCONT)
        fleet.stop_all()
    assert_exactly_once(fresh_pg_url, 24)
    zombie_id = query(fresh_pg_url, f"SELECT worker_id FROM workers WHERE pid = {zombie.pid}")[0][0]
    fenced = query(fresh_pg_url, f"SELECT count(*) FROM attempts WHERE worker_id = '{zombie_id}' "
                                 "AND outcome = 'fenced'")[0][0]
    assert fenced >= 1, fleet.logs()
    winners = query(fresh_pg_url, f"SELECT DISTINCT worker_id FROM attempts WHERE outcome = 'done' "
                                  f"AND document_id IN ({ids})")
    assert zombie_id not in {w[0] for w in winners}


def test_leader_killed_during_discovery(tmp_path: Path, fresh_pg_url: str) -> None:
    total = 15_000
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(total):
        (docs / f"f{i:05d}.txt").touch()  # empty: processing is a claim and a fenced completion, no model
    fleet = Fleet(write_config(tmp_path / "cfg.yaml", docs, fresh_pg_url, claim_batch_size=200), tmp_path)
    fleet.start(3)
    try:
        def leader_mid_discovery() -> bool:
            count = query(fresh_pg_url, "SELECT count(*) FROM documents")[0][0]
            leader = query(fresh_pg_url, "SELECT w.pid FROM runs r JOIN workers w ON w.worker_id = r.leader_id")
            if leader and 0 < count < total:
                victim = next(p for p in fleet.procs if p.pid == leader[0][0])
                fleet.kill(victim)
                return True
            return False

        _wait_for(leader_mid_discovery, 120, "the leader to be discovering", fleet)
        fleet.wait(timeout=300)
    finally:
        fleet.stop_all()
    states = dict(query(fresh_pg_url, "SELECT state, count(*) FROM documents GROUP BY state"))
    assert states == {"done": total}, states
    per_doc = query(fresh_pg_url, "SELECT count(*) FROM attempts WHERE outcome = 'done' GROUP BY document_id "
                                  "HAVING count(*) <> 1")
    assert not per_doc
    assert query(fresh_pg_url, "SELECT state, finalize_count FROM runs") == [("complete", 1)]


def test_database_restart_mid_run(tmp_path: Path, fresh_pg_url: str, pg_server) -> None:  # type: ignore[no-untyped-def]
    docs = 120
    write_small_corpus(tmp_path / "docs", docs)
    fleet = Fleet(write_config(tmp_path / "cfg.yaml", tmp_path / "docs", fresh_pg_url), tmp_path)
    fleet.start(2)
    try:
        _wait_for(lambda: query(fresh_pg_url, "SELECT count(*) FROM documents WHERE state = 'done'")[0][0] >= 10,
                  120, "some documents to be done", fleet)
        pg_server.stop("fast")
        time.sleep(2)
        pg_server.start()
        fleet.wait(timeout=240)
    finally:
        fleet.stop_all()
    assert all(p.returncode == 0 for p in fleet.procs), fleet.logs()
    states = dict(query(fresh_pg_url, "SELECT state, count(*) FROM documents GROUP BY state"))
    assert states == {"done": docs}, states


def test_two_machines_over_tcp_split_the_work(tmp_path: Path, fresh_pg_tcp_url: str) -> None:
    docs = 80
    write_small_corpus(tmp_path / "docs", docs)
    config = write_config(tmp_path / "cfg.yaml", tmp_path / "docs", "postgresql://ignored@nowhere/by-db-flag",
                          worker_id="${HOSTNAME}", claim_batch_size=1)
    machines = [Fleet(config, tmp_path, env={"HOSTNAME": host}, tag=host) for host in ("machine-a", "machine-b")]
    for fleet in machines:
        fleet.start(1, extra_args=["--db", fresh_pg_tcp_url, "--workers", "2"])
    try:
        for fleet in machines:
            fleet.wait(timeout=240)
    finally:
        for fleet in machines:
            fleet.stop_all()
    assert_exactly_once(fresh_pg_tcp_url, docs)
    done_by = query(fresh_pg_tcp_url, "SELECT worker_id FROM attempts WHERE outcome = 'done'")
    machines_that_worked = {worker_id.rsplit("-", 1)[0] for (worker_id,) in done_by}
    assert machines_that_worked == {"machine-a", "machine-b"}, machines_that_worked
    assert query(fresh_pg_tcp_url, "SELECT count(*) FROM workers")[0][0] == 4


def test_fifty_workers_no_connection_exhaustion(tmp_path: Path, fresh_pg_url: str) -> None:
    total = 2_000
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(total):
        (docs / f"t{i:04d}.txt").touch()
    config = write_config(tmp_path / "cfg.yaml", docs, fresh_pg_url, claim_batch_size=5)
    text = config.read_text().replace("backend: postgresql", "backend: postgresql\n  pool_size: 30")
    config.write_text(text)
    fleet = Fleet(config, tmp_path)
    for _ in range(5):
        fleet.start(1, extra_args=["--workers", "10"])
    try:
        fleet.wait(timeout=300)
    finally:
        fleet.stop_all()
    assert all(p.returncode == 0 for p in fleet.procs), fleet.logs()
    workers = query(fresh_pg_url, "SELECT count(*) FROM workers")[0][0]
    assert workers == 50
    states = dict(query(fresh_pg_url, "SELECT state, count(*) FROM documents GROUP BY state"))
    assert states == {"done": total}, states


def test_a_database_gone_for_good_stops_the_worker_at_once(tmp_path: Path, fresh_pg_url: str,
                                                           pg_server) -> None:  # type: ignore[no-untyped-def]
    docs = 40
    write_small_corpus(tmp_path / "docs", docs)
    config = write_config(tmp_path / "cfg.yaml", tmp_path / "docs", fresh_pg_url, claim_batch_size=8)
    with FakeEmbeddingServer(latency=1.0) as server:  # a slow provider: documents are held when it goes
        data = yaml.safe_load(config.read_text())
        data["storage"]["reconnect_timeout"] = 2
        data["embedding"] = {"provider": "openai", "model": "fake", "base_url": server.base_url, "dimensions": 32,
                             "batch_size": 2}
        config.write_text(yaml.safe_dump(data))
        fleet = Fleet(config, tmp_path)
        fleet.start(1)
        try:
            _wait_for(lambda: query(fresh_pg_url, "SELECT count(*) FROM documents WHERE state = 'done'")[0][0] >= 2,
                      120, "some documents to be done", fleet)
            pg_server.stop("fast")
            try:
                fleet.wait(timeout=120)
            finally:
                pg_server.start()
        finally:
            fleet.stop_all()
        logs = fleet.logs()
        assert fleet.procs[0].returncode == 1 and "could not reconnect within 2 s" in logs, logs
        # It stopped at the first operation that gave up, instead of failing each held document against it.
        assert "could not record the failure" not in logs and "could not release" not in logs, logs
        rerun = Fleet(config, tmp_path, tag="rerun")
        rerun.start(1)
        rerun.wait(timeout=240)
    assert_exactly_once(fresh_pg_url, docs)
