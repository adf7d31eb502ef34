"""Helpers of the runtime tests: run the connector in-process, read topics back independently."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connector.app import Connector
from connector.config import RunSettings
from connector.serde import AvroReader
from tests.harness import earliest_consumer

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Record:
    key: str | None
    partition: int
    offset: int
    timestamp: int
    kind: str
    value: dict[str, Any]


def connector_env(bootstrap: str, ws_port: int, instruments: str, tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a connector streaming from the simulator to topics of its own."""
    suffix = uuid.uuid4().hex[:8]
    return {
        "KITE_API_KEY": "simulator",
        "KITE_ACCESS_TOKEN": "simulator-token",
        "KITE_WS_URL": f"ws://127.0.0.1:{ws_port}/",
        "KITE_INSTRUMENTS": instruments,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC_TICKS": f"ticks-{suffix}",
        "KAFKA_TOPIC_ORDER_UPDATES": f"orders-{suffix}",
        "KAFKA_TOPIC_DEAD_LETTERS": f"dlq-{suffix}",
        "KAFKA_TOPIC_PARTITIONS": "3",
        "ORDER_LOG_DIR": str(tmp / "order-log"),
        "METRICS_PORT": "0",
        "KITE_WATCHDOG_SECONDS": "3",
        "KITE_RECONNECT_MAX_DELAY": "1",
        **extra,
    }


def connector_settings(
    bootstrap: str, ws_port: int, instruments: str, tmp: Path, **extra: str
) -> RunSettings:
    return RunSettings.load(environ=connector_env(bootstrap, ws_port, instruments, tmp, **extra))


@contextlib.contextmanager
def running_connector(values: RunSettings) -> Iterator[Connector]:
    connector = Connector(values)
    connector.start()
    try:
        yield connector
    finally:
        connector.stop()


def read_topic(
    bootstrap: str,
    topic: str,
    expect: int | None = None,
    idle: float = 5.0,
    limit: float = 120.0,
    until: Callable[[list[Record]], bool] | None = None,
    registry_url: str | None = None,
) -> list[Record]:
    """Every record of ``topic`` (from the beginning), decoded with the project's reader.

    Stops after ``expect`` records (if given), when ``until`` says so, or when nothing new arrived for
    ``idle`` seconds. ``registry_url`` is needed for Confluent-framed topics.
    """
    reader = AvroReader(registry_url)
    consumer = earliest_consumer(bootstrap, topic, "t")
    out: list[Record] = []
    started = last = time.monotonic()
    try:
        while time.monotonic() - started < limit:
            batch = consumer.consume(1000, 0.5)
            for msg in batch:
                assert msg.error() is None, msg.error()
                kind, value = reader.read(msg.value() or b"")
                key = msg.key()
                out.append(
                    Record(
                        key.decode() if key else None,
                        msg.partition() or 0,
                        msg.offset() or 0,
                        msg.timestamp()[1],
                        kind,
                        value,
                    )
                )
            if batch:
                last = time.monotonic()
            if (expect is not None and len(out) >= expect) or (until is not None and until(out)):
                break
            if time.monotonic() - last > idle and (expect is None or out):
                break
    finally:
        consumer.close()
    return out


def sent_log(path: Path, kind: str) -> list[dict[str, Any]]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == kind]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of a GET on loopback; (0, "") when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def compose_command(file: str) -> list[str]:
    """The compose command (KITE_COMPOSE, else `docker compose`, else docker-compose) for ``file`` of the
    project; skips the test when there is none."""
    if os.environ.get("KITE_COMPOSE"):
        command = os.environ["KITE_COMPOSE"].split()
    elif subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        command = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        command = ["docker-compose"]
    else:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    return [*command, "-f", str(ROOT / file)]
