"""Four ``docmill ingest`` processes share one provider limit of 120 requests/min, held in the store.

The fake server counts every request it receives (accepted or not). The processes together must
never send more than the limit allows: one burst of the bucket, then the rate, in every window.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.chaos.harness import Fleet, query, write_small_corpus
from tests.fakes.openai_server import FakeEmbeddingServer

DOCS = 48
RPM = 120
BURST_SECONDS = 5.0


def test_four_processes_stay_under_the_shared_limit(tmp_path: Path, backend_url: str) -> None:
    docs = tmp_path / "docs"
    write_small_corpus(docs, DOCS)
    with FakeEmbeddingServer(requests_per_minute=RPM, burst_seconds=BURST_SECONDS) as server:
        storage = ({"backend": "postgresql", "url": backend_url} if backend_url.startswith("postgres")
                   else {"backend": "sqlite", "path": backend_url.removeprefix("sqlite:///")})
        config = tmp_path / "cfg.yaml"
        config.write_text(yaml.safe_dump({
            "storage": storage,
            "content_sources": [{"name": "docs", "path": str(docs)}],
            "embedding": {"provider": "openai", "model": "fake", "base_url": server.base_url, "dimensions": 32,
                          "batch_size": 2, "requests_per_minute": RPM, "rate_limit_burst": BURST_SECONDS},
            "workers": {"claim_batch_size": 2, "poll_interval": 0.5, "retry_delay": 0, "max_retries": 2},
        }))
        fleet = Fleet(config, tmp_path)
        fleet.start(4)
        try:
            fleet.wait(timeout=240)
        finally:
            fleet.stop_all()
        ok = server.count(200)
        burst = server.request_burst
        windows = {w: server.max_in_window(w) for w in (1, 5, 10, 60)}
    states = dict(query(backend_url, "SELECT state, count(*) FROM documents GROUP BY state"))
    assert states == {"done": DOCS}, fleet.logs()
    assert ok >= DOCS // 2  # every chunk was embedded (2 per request at most)
    # Sent, not just accepted: one burst of the bucket, then 2 requests a second, in every window.
    for seconds, seen in windows.items():
        assert seen <= burst + RPM / 60 * seconds + 1, (seconds, seen, windows)
    assert windows[60] <= RPM + burst
