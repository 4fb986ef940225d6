"""docmill: turn piles of documents into a searchable store for RAG, and keep it in step."""

from docmill.config import Config
from docmill.runner import IngestSummary, ingest
from docmill.search import search
from docmill.stats import ProcessingStats, get_processing_stats

__all__ = ["Config", "IngestSummary", "ProcessingStats", "get_processing_stats", "ingest", "search"]
__version__ = "0.1.0"
