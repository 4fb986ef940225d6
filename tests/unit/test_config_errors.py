"""What a wrong config file is told: the file, the key, what is wrong, never megabytes of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from docmill.config import Config
from docmill.errors import ConfigError


def test_each_problem_is_one_line_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "docmill.yaml"
    path.write_text("workers:\n  claim_batch_sise: 4\n  max_retries: many\n")
    with pytest.raises(ConfigError) as caught:
        Config.load(path)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}: invalid configuration:"
    assert "  workers.claim_batch_sise: unknown key (did you mean 'claim_batch_size'?)" in lines
    assert any(line.startswith("  workers.max_retries: ") and "(got 'many')" in line for line in lines)


def test_a_huge_key_or_value_is_clipped_in_the_message(tmp_path: Path) -> None:
    path = tmp_path / "docmill.yaml"
    path.write_text(f"workers:\n  claim_batch_size: \"{'x' * 400_000}\"\n  {'k' * 1000}: 1\n")
    with pytest.raises(ConfigError) as caught:
        Config.load(path)
    message = str(caught.value)
    assert len(message) < 2000
    assert "workers.claim_batch_size" in message and "(400002 characters)" in message
    assert "unknown key" in message and "(1008 characters)" in message
