from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "kite"


def plain_times(value: Any) -> Any:
    """Datetimes (naive local or aware) anywhere in ``value`` as epoch milliseconds, for comparisons."""
    if hasattr(value, "timestamp"):
        return round(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {k: plain_times(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_times(v) for v in value]
    return value


def fixture_packet(name: str) -> bytes:
    return base64.b64decode((FIXTURES / f"{name}.packet").read_text())


def fixture_json(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def postback() -> dict[str, Any]:
    body: dict[str, Any] = fixture_json("postback.json")
    return body
