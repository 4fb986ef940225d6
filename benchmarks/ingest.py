"""End-to-end ingest throughput next to the raw embedder on the same chunks (``docmill benchmark``).

    python benchmarks/ingest.py --documents 200 [--folder DIR] [--workers 1,2,4] [--output FILE]

Prints JSON: docs/s, chunks/s, p50/p95/p99 per stage and per document, cache hits, peak RSS per
worker, the unchanged re-run, the scaling curve, the raw embedder's chunks/s and pipeline efficiency.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root replaces this folder on sys.path: benchmarks/queue.py would shadow the stdlib queue.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from docmill.cli import main

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "benchmark", *sys.argv[1:]]
    main()
