"""Logging set-up: applied on every ingest, it must neither stack handlers nor miss a change."""

from __future__ import annotations

import json
import logging

import pytest

from docmill.config import LoggingConfig
from docmill.observability import setup_logging


def test_logging_set_up_again_keeps_one_handler_and_follows_changes(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("docmill")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    log = logging.getLogger("docmill.test")
    try:
        setup_logging(LoggingConfig(level="INFO"))
        log.info("first")
        setup_logging(LoggingConfig(level="INFO"))
        log.info("second")
        err = capsys.readouterr().err
        assert err.count("first") == 1 and err.count("second") == 1, err  # one handler, not two
        setup_logging(LoggingConfig(level="WARNING", structured=True))
        log.info("hidden")
        log.warning("shown")
        assert [json.loads(line)["message"] for line in capsys.readouterr().err.splitlines()] == ["shown"]
        logger.handlers.clear()  # someone else removed it: the next set-up puts it back
        setup_logging(LoggingConfig(level="WARNING", structured=True))
        log.warning("back")
        assert "back" in capsys.readouterr().err
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
