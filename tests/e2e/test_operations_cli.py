"""Operations commands as subprocesses against real multi-worker runs, on SQLite and PostgreSQL:
status, documents, claims, monitor, deadletter, retry, trace, shutdown, stop, /metrics, /healthz,
/readyz, structured logs without secrets."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.chaos.harness import Fleet, query, write_small_corpus
from tests.e2e.test_cli import DOCMILL, run


def free_ports(count: int) -> int:
    """A base port such that base … base+count-1 are all free now."""
    for _ in range(100):
        base = random.randint(20000, 60000)
        try:
            socks = []
            for i in range(count):
                s = socket.socket()
                s.bind(("0.0.0.0", base + i))
                socks.append(s)
            for s in socks:
                s.close()
            return base
        except OSError:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


def write_config(path: Path, docs: Path, db_url: str, *, monitoring: dict[str, Any] | None = None,
                 logging_: dict[str, Any] | None = None, **workers: Any) -> Path:
    storage = ({"backend": "postgresql", "url": db_url} if db_url.startswith("postgres")
               else {"backend": "sqlite", "path": db_url.removeprefix("sqlite:///")})
    config = {"storage": storage, "content_sources": [{"name": "docs", "path": str(docs)}],
              "workers": {"claim_timeout": 10, "heartbeat_interval": 1, "poll_interval": 0.5,
                          "claim_batch_size": 2, "retry_delay": 0, **workers},
              "monitoring": monitoring or {}, "logging": logging_ or {"level": "WARNING"}}
    path.write_text(yaml.safe_dump(config))
    return path


def cli(*args: str, cwd: Path, code: int | None = 0, env: dict[str, str] | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``docmill ARGS`` as a subprocess, its exit code checked (see tests.e2e.test_cli.run)."""
    return run(*args, cwd=cwd, check_code=code, env=env, timeout=timeout)


def cli_json(*args: str, cwd: Path, code: int = 0) -> Any:
    return json.loads(cli(*args, "--json", cwd=cwd, code=code).stdout)


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def count(db_url: str, sql: str) -> int:
    """A count from the store, 0 while its tables do not exist yet."""
    try:
        return int(query(db_url, sql)[0][0])
    except Exception:
        return 0


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


STATUS_KEYS = {"run_id", "state", "leader_id", "active_workers", "stale_workers", "queue_depth", "throughput",
               "avg_processing_time", "p95_processing_time", "failed_count", "counts", "chunks",
               "throughput_windows", "eta_seconds", "failures_by_class", "workers", "claimed_expired",
               "oldest_claim_seconds"}


def test_live_run_metrics_health_and_every_command(tmp_path: Path, backend_url: str) -> None:
    docs = tmp_path / "docs"
    write_small_corpus(docs, 60, paragraphs=3)
    (docs / "broken.json").write_text('{"a": 1,,}')
    port = free_ports(4)
    config = write_config(tmp_path / "docmill.yaml", docs, backend_url,
                          monitoring={"enabled": True, "metrics_port": port, "health_check_port": port + 2})
    cfg = str(config)
    ingest = subprocess.Popen([*DOCMILL, "ingest", cfg, "--workers", "2", "--json"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # While the run is live: both workers' /metrics parse, health answers, status sees workers.
        families = {}
        for worker_port in (port, port + 1):
            def scrape(p: int = worker_port) -> dict[str, Any] | None:
                try:
                    status, text = http_get(f"http://127.0.0.1:{p}/metrics")
                except OSError:
                    return None
                fams = {f.name: f for f in text_string_to_metric_families(text)}
                done = sum(s.value for s in fams["docmill_documents"].samples
                           if s.labels.get("status") == "done" and s.name.endswith("_total"))
                return fams if status == 200 and done > 0 else None

            families = wait_for(scrape, 120, f"metrics with completed documents on port {worker_port}")
        for name in ("docmill_documents", "docmill_processing_duration_seconds", "docmill_queue_depth",
                     "docmill_workers_active", "docmill_memory_usage_bytes", "docmill_cpu_usage_ratio",
                     "docmill_db_connections_active", "docmill_chunks", "docmill_embed_batches",
                     "docmill_embed_duration_seconds", "docmill_retries", "docmill_dead_letters",
                     "docmill_fenced_completions"):
            assert name in families, name
        depth = {s.labels["state"]: s.value for s in families["docmill_queue_depth"].samples}
        assert set(depth) == {"pending", "claimed", "done", "dead"}
        assert families["docmill_memory_usage_bytes"].samples[0].value > 10_000_000
        assert families["docmill_memory_usage_bytes"].samples[0].labels["worker_id"]
        assert http_get(f"http://127.0.0.1:{port + 2}/healthz")[0] == 200
        code, body = http_get(f"http://127.0.0.1:{port + 3}/readyz")
        assert code == 200, body
        assert json.loads(body)["checks"] == {"database": "reachable", "schema": "current", "model": "loaded"}
        status = cli_json("status", "-c", cfg, "--detailed", cwd=tmp_path)
        assert set(status) >= STATUS_KEYS
        assert status["state"] in ("ingesting", "finalizing", "complete")
        assert isinstance(cli_json("claims", "-c", cfg, "--show-expired", cwd=tmp_path), list)
        snap = cli_json("monitor", "-c", cfg, cwd=tmp_path)
        assert {"stats", "claims", "recent_errors", "dead_letter_groups", "thresholds", "alerts"} <= set(snap)
    finally:
        out, errs = ingest.communicate(timeout=300)
    assert ingest.returncode == 3, errs  # broken.json is dead-lettered
    summary = json.loads(out)
    assert summary["counts"] == {"pending": 0, "claimed": 0, "done": 60, "dead": 1}

    # After the run: every command answers, JSON has its keys.
    status = cli_json("status", "-c", cfg, "--show-failures", cwd=tmp_path)
    assert status["failures_by_class"] == {"CorruptDocumentError": 1}
    assert status["failure_groups"][0]["count"] == 1 and status["failures"][0]["uri"].endswith("broken.json")
    assert status["avg_processing_time"] > 0 and status["p95_processing_time"] >= status["avg_processing_time"]
    assert sum(status["completed_windows"].values()) > 0
    text = cli("status", "-c", cfg, "--detailed", cwd=tmp_path).stdout
    assert "dead letters" in text and "CorruptDocumentError" in text
    assert len(cli_json("documents", "-c", cfg, "--source", "docs", cwd=tmp_path)) == 61
    assert cli_json("documents", "-c", cfg, "--source", "nope", cwd=tmp_path) == []
    dead = cli_json("deadletter", "list", "-c", cfg, cwd=tmp_path)
    assert [d["uri"].endswith("broken.json") for d in dead] == [True]
    assert "invalid JSON" in cli("deadletter", "list", "-c", cfg, "--details", cwd=tmp_path).stdout
    groups = cli_json("deadletter", "analyze", "-c", cfg, cwd=tmp_path)
    assert groups[0]["error_class"] == "CorruptDocumentError" and groups[0]["example_id"] == dead[0]["id"]
    story = cli_json("trace", "-c", cfg, "--doc-id", str(docs / "doc_0001.txt"), cwd=tmp_path)
    assert [s["kind"] for s in story[0]["steps"]] == ["discovered", "claimed", "done"]
    assert story[0]["steps"][-1]["detail"]["chunks"] == story[0]["document"]["chunks"] > 0
    assert "leased by a worker" in cli("trace", "-c", cfg, "--doc-id", str(dead[0]["id"]), cwd=tmp_path).stdout
    assert cli_json("reset-claims", "-c", cfg, "--older-than", "1h", cwd=tmp_path)["released"] == 0
    assert "released 0 claim(s)" in cli("reset-claims", "-c", cfg, "--older-than", "30m", cwd=tmp_path).stdout
    export = tmp_path / "metrics.json"
    cli("monitor", "-c", cfg, "--export", str(export), cwd=tmp_path)
    assert json.loads(export.read_text())["stats"]["counts"]["done"] == 60
    assert cli("monitor", "-c", cfg, "--alerts", cwd=tmp_path).stdout.strip() == "no alerts"
    # Alerts: a threshold that fires, and dead-letter growth since the previous check.
    low = write_config(tmp_path / "low.yaml", docs, backend_url, monitoring={"max_processing_time": 0.001})
    fired = cli("monitor", "-c", str(low), "--alerts", cwd=tmp_path, code=2).stdout
    assert "ALERT processing_time" in fired
    (docs / "bad.bin").write_bytes(b"\x00\x01binary\xff")
    cli("ingest", cfg, "--json", cwd=tmp_path, code=3)
    grown = cli("monitor", "-c", cfg, "--alerts", cwd=tmp_path, code=2).stdout
    assert "ALERT dead_letters" in grown and "from 1 to 2" in grown
    assert cli_json("deadletter", "purge", "-c", cfg, "--older-than", "30d", cwd=tmp_path)["purged"] == 0
    bad = cli("deadletter", "purge", "-c", cfg, "--older-than", "soon", cwd=tmp_path, code=1)
    assert bad.stderr.strip().startswith("error: not a duration") and "Traceback" not in bad.stderr


def test_dead_letter_retry_brings_a_fixed_document_back(tmp_path: Path, backend_url: str) -> None:
    docs = tmp_path / "docs"
    write_small_corpus(docs, 4)
    broken = docs / "data.json"
    broken.write_text('{"a": 1,,}')
    config = str(write_config(tmp_path / "docmill.yaml", docs, backend_url))
    cli("ingest", config, "--workers", "2", "--json", cwd=tmp_path, code=3)
    [dead] = cli_json("deadletter", "list", "-c", config, cwd=tmp_path)
    # Fix the file without changing its size or mtime: discovery alone would never look at it again.
    stat = broken.stat()
    broken.write_text('{"a": 12 }')
    os.utime(broken, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cli_json("ingest", config, cwd=tmp_path, code=3)["counts"]["dead"] == 1
    report = cli_json("deadletter", "retry", str(dead["id"]), "-c", config, cwd=tmp_path)
    assert report["requeued"] == [dead["id"]] and report["run_state"] == "complete"
    assert cli_json("documents", "-c", config, "--state", "pending", cwd=tmp_path)[0]["attempts"] == 0
    summary = cli_json("ingest", config, cwd=tmp_path)
    assert summary["counts"]["dead"] == 0 and summary["counts"]["done"] == 5
    kinds = [s["kind"] for s in cli_json("trace", "-c", config, "--doc-id", str(broken), cwd=tmp_path)[0]["steps"]]
    assert kinds == ["discovered", "claimed", "dead", "requeued", "claimed", "done"]
    # retry --doc-ids / --from-dead-letter-queue and their refusals
    again = cli_json("retry", "-c", config, "--doc-ids", f"{dead['id']},nope", cwd=tmp_path)
    assert again["requeued"] == [] and set(again["skipped"]) == {str(dead["id"]), "nope"}
    assert cli_json("retry", "-c", config, "--from-dead-letter-queue", cwd=tmp_path)["requeued"] == []
    assert "either --doc-ids" in cli("retry", "-c", config, cwd=tmp_path, code=1).stderr


def test_shutdown_stops_every_worker_and_stop_force_releases(tmp_path: Path, backend_url: str) -> None:
    docs = tmp_path / "docs"
    write_small_corpus(docs, 150, paragraphs=3)
    config = write_config(tmp_path / "docmill.yaml", docs, backend_url)
    fleet = Fleet(config=config, cwd=tmp_path)
    fleet.start(3)
    try:
        wait_for(lambda: count(backend_url, "SELECT count(*) FROM documents WHERE state = 'done'") >= 5,
                 120, "some documents done")
        # Stopped within --wait's timeout: the batches being embedded finish, everything else is released.
        result = cli_json("shutdown", "-c", str(config), "--wait", "--timeout", "60", cwd=tmp_path)
        assert result["stopped"] is True and result["alive"] == [] and result["claimed"] == 0
        for p in fleet.procs:
            p.wait(30)
        assert [p.returncode for p in fleet.procs] == [0, 0, 0], fleet.logs()
    finally:
        fleet.stop_all()
    states = dict(query(backend_url, "SELECT state, count(*) FROM documents GROUP BY state"))
    assert states.get("claimed", 0) == 0 and states.get("pending", 0) > 0
    # Nothing was lost and no attempt was spent on documents that were given back.
    assert query(backend_url, "SELECT count(*) FROM attempts WHERE outcome IN ('lost', 'fenced')") == [(0,)]
    assert query(backend_url, "SELECT max(attempts) FROM documents WHERE state = 'pending'") in ([(0,)], [(None,)])
    # stop --force: a running worker's claims are released at once and its late completions fenced.
    fleet2 = Fleet(config=config, cwd=tmp_path, tag="b")
    fleet2.start(1)
    try:
        wait_for(lambda: count(backend_url, "SELECT count(*) FROM documents WHERE state = 'claimed'") > 0,
                 60, "a claim")
        forced = cli_json("stop", "-c", str(config), "--force", cwd=tmp_path)
        assert forced["released"] >= 1
        fleet2.procs[0].wait(60)
        assert fleet2.procs[0].returncode == 0, fleet2.logs()
    finally:
        fleet2.stop_all()
    assert query(backend_url, "SELECT count(*) FROM documents WHERE state = 'claimed'") == [(0,)]
    assert query(backend_url, "SELECT count(*) FROM events WHERE kind = 'reset'")[0][0] >= 1


def test_structured_logs_and_no_secrets_anywhere(tmp_path: Path, backend_url: str) -> None:
    password, api_key = "Sup3rS3cretPw", "sk-test-KEY-0123456789abcdef"
    url = backend_url
    if url.startswith("postgres"):
        url = url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@", 1)
    docs = tmp_path / "docs"
    write_small_corpus(docs, 6)
    (docs / "bad.bin").write_bytes(b"\x00\x01binary\xff")
    config = write_config(tmp_path / "docmill.yaml", docs, url, logging_={"level": "DEBUG", "structured": True})
    raw = yaml.safe_load(config.read_text())
    raw["embedding"] = {"api_key": "${DOCMILL_TEST_KEY}"}
    config.write_text(yaml.safe_dump(raw))
    env = {"DOCMILL_TEST_KEY": api_key}
    outputs = [cli("ingest", str(config), "--workers", "2", cwd=tmp_path, code=3, env=env)]
    for args in (["status", "--detailed", "--show-failures"], ["status", "--json"], ["deadletter", "list", "--details"],
                 ["monitor", "--json"], ["trace", "--doc-id", "1"], ["claims", "--show-expired"]):
        outputs.append(cli(*args, "-c", str(config), cwd=tmp_path, env=env))
    outputs.append(cli("validate", str(config), cwd=tmp_path, env=env))
    text = "\n".join(p.stdout + p.stderr for p in outputs)
    assert password not in text and api_key not in text
    json_lines = [json.loads(line) for line in outputs[0].stderr.splitlines() if line.startswith("{")]
    worker_lines = [r for r in json_lines if "worker_id" in r]
    assert worker_lines, outputs[0].stderr[-2000:]
    assert all({"time", "level", "worker_id", "run_id", "message"} <= set(r) for r in worker_lines)
    assert any(r.get("doc_id") for r in worker_lines if "dead-lettered" in r["message"])


def test_monitor_live_draws_the_dashboard_and_quits_on_ctrl_c(tmp_path: Path, sqlite_url: str) -> None:
    import signal

    docs = tmp_path / "docs"
    write_small_corpus(docs, 3)
    (docs / "bad.bin").write_bytes(b"\x00\x01binary\xff")
    config = str(write_config(tmp_path / "docmill.yaml", docs, sqlite_url))
    cli("ingest", config, "--json", cwd=tmp_path, code=3)
    proc = subprocess.Popen([*DOCMILL, "monitor", "-c", config, "--live", "--interval", "0.5"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(4)
    proc.send_signal(signal.SIGINT)
    out, errs = proc.communicate(timeout=20)
    assert proc.returncode == 0, errs
    for part in ("docmill monitor", "queue", "throughput", "workers", "recent errors", "UnsupportedFormatError"):
        assert part in out, part
    assert "Traceback" not in errs
