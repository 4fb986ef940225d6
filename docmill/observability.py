"""Logging set-up: readable lines or one JSON object per line, with worker and run ids."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from docmill.config import LoggingConfig

_SECRET_IN_URL = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")
_CONTEXT: dict[str, str] = {}


def redact(text: str) -> str:
    """Hide passwords embedded in URLs inside any text."""
    return _SECRET_IN_URL.sub(r"\1***@", text)


def set_log_context(**values: str) -> None:
    """Fields added to every log record of this process (worker_id, run_id)."""
    _CONTEXT.update(values)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + f".{int(record.msecs):03d}Z", "level": record.levelname, "logger": record.name,
                "message": redact(record.getMessage()), **_CONTEXT}
        if hasattr(record, "doc_id"):
            data["doc_id"] = record.doc_id
        if record.exc_info:
            data["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(data, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def __init__(self, with_worker: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
        self.with_worker = with_worker

    def format(self, record: logging.LogRecord) -> str:
        line = redact(super().format(record))
        worker = _CONTEXT.get("worker_id")
        return f"{line} [{worker}]" if self.with_worker and worker else line


def setup_logging(cfg: LoggingConfig) -> None:
    """Configure the ``docmill`` logger from the config's ``logging`` section."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if cfg.structured else _TextFormatter(cfg.include_worker_id))
    logger = logging.getLogger("docmill")
    logger.handlers[:] = [handler]
    logger.setLevel(cfg.level)
    logger.propagate = False
