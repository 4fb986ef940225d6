"""How every benchmark hands over its figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(result: dict[str, Any], output: Path | None) -> None:
    """Print the figures as JSON, and write them to ``output`` too when given."""
    text = json.dumps(result, indent=2, default=str)
    if output:
        output.write_text(text + "\n")
    print(text)
