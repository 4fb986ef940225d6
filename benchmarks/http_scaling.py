"""Scaling with an I/O-bound embedder: docs/s from 1 to 8 worker processes against the fake server.

    python benchmarks/http_scaling.py [--documents 300] [--workers 1,2,4,8] [--latency 0.4] [--output FILE]

The fake OpenAI server (tests/fakes/openai_server.py) answers every request after a fixed latency,
with no rate limit, so each worker is bound by waiting, not by CPU; ideal scaling is linear.
Prints the ``docmill benchmark`` JSON plus the server's own counters.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The repository root replaces this folder on sys.path: benchmarks/queue.py would shadow the stdlib queue.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from benchmarks.report import emit
from docmill.benchmark import benchmark, parse_workers
from docmill.config import Config
from tests.fakes.openai_server import FakeEmbeddingServer


def main() -> None:
    """Run the scaling benchmark and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=300)
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--latency", type=float, default=0.4, help="seconds per embedding request")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight per worker")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    with FakeEmbeddingServer(latency=args.latency) as server:
        config = Config(embedding={"provider": "openai", "model": "fake", "base_url": server.base_url,
                                   "dimensions": 384, "batch_size": args.batch_size,
                                   "max_concurrency": args.concurrency},
                        storage={"pool_size": 64})
        result = benchmark(config, documents=args.documents, workers=parse_workers(args.workers), raw=False)
        result["fake_server"] = {"latency_seconds": args.latency, **server.stats()}
    emit(result, args.output)


if __name__ == "__main__":
    main()
