"""What several unit test files build the same way."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from connector.config import RunSettings
from connector.sink import SinkConfig

BASE = {"KITE_API_KEY": "k", "KITE_ACCESS_TOKEN": "secret-token"}
MOCK_CLUSTER = {"test.mock.num.brokers": "1"}  # librdkafka's built-in mock cluster: no broker needed
NO_BROKER = {"bootstrap.servers": "127.0.0.1:1", "log_level": "0"}  # nothing listens there


def run_settings(env: dict[str, str] | None = None, **fields: Any) -> RunSettings:
    return RunSettings.load(environ={**BASE, **(env or {})}, **fields)


def sink_config(producer: Mapping[str, str] | None = None, **env: str) -> SinkConfig:
    """A sink's config from run settings (``MAX_IN_FLIGHT="10"``), on the mock cluster by default."""
    settings = run_settings(env, producer_overrides=dict(MOCK_CLUSTER if producer is None else producer))
    return SinkConfig.of(settings, "test")


def eventually(done: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Whether ``done`` became true within ``timeout`` (checked every 50 ms)."""
    tick = threading.Event()
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        tick.wait(0.05)
    return True
