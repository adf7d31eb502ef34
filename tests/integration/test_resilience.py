"""The runtime under faults: broker outage (both policies), dropped connections, expired token, SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.app import Connector
from connector.config import RunSettings
from connector.simulator import SimulatorConfig, bundled_instruments, running_simulator, synthetic_instruments
from tests.integration.helpers import (
    connector_env,
    connector_settings,
    read_topic,
    running_connector,
    sent_log,
    wait_until,
)
from tests.integration.test_runtime import _drain

pytestmark = pytest.mark.integration

INSTRUMENTS = bundled_instruments() + synthetic_instruments(200)
TOKENS = [i.instrument_token for i in INSTRUMENTS if i.instrument_token & 0xFF != 9][:200]
SPEC = ",".join(f"{t}@full" for t in TOKENS)
OUTAGE = 20.0


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.fixture
def paused_broker(kafka_container: tuple[str, str | None]) -> Iterator[tuple[str, str]]:
    bootstrap, container = kafka_container
    if container is None:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS names an outside broker: it cannot be paused")
    yield bootstrap, container
    subprocess.run(["docker", "unpause", container], capture_output=True)


def _outage(container: str, connector: Connector, samples: list[tuple[int, float]]) -> None:
    """Pause the broker for OUTAGE seconds, sampling in-flight and memory meanwhile."""
    subprocess.run(["docker", "pause", container], check=True)
    try:
        deadline = time.monotonic() + OUTAGE
        while time.monotonic() < deadline:
            samples.append((connector.shard_stats[0].in_flight, _rss_mb()))
            time.sleep(0.2)
    finally:
        subprocess.run(["docker", "unpause", container], check=True)


def test_block_policy_outage_bounded_and_lossless(paused_broker: tuple[str, str], tmp_path: Path) -> None:
    bootstrap, container = paused_broker
    log = tmp_path / "sent.jsonl"
    config = SimulatorConfig(port=0, rate=10, order_rate=2, seed=21, sent_log=str(log))
    bound = 3000
    with running_simulator(config, INSTRUMENTS) as sim:
        values = connector_settings(
            bootstrap, sim.port, SPEC, tmp_path, MAX_IN_FLIGHT=str(bound), BACKPRESSURE_POLICY="block"
        )
        with running_connector(values) as connector:
            stats, line = connector.shard_stats[0], connector.stats[0]
            wait_until(lambda: stats.delivered.total() > 2000, 60, "a steady stream")
            samples: list[tuple[int, float]] = []
            _outage(container, connector, samples)
            wait_until(lambda: stats.in_flight < bound // 2, 90, "Kafka to catch up")
            time.sleep(3)
            _drain(sim, connector)
        sim.flush_log()
    in_flight = [s[0] for s in samples]
    settled = [rss for n, rss in samples if n >= bound - 10]
    assert max(in_flight) <= bound + line.order_updates, "ticks stay at the bound (order updates never wait)"
    assert len(settled) > 10, "the bound was reached and held during the outage"
    assert max(settled) - min(settled) < 40, f"memory stays flat: {min(settled):.0f}..{max(settled):.0f} MB"
    assert stats.backpressure_seconds > OUTAGE / 2
    sent = sent_log(log, "tick")
    ticks = read_topic(bootstrap, values.kafka_topic_ticks, expect=len(sent))
    assert len(ticks) == len(sent), "every tick the simulator sent is in Kafka"
    assert stats.failed.total() == 0


def test_conflate_policy_outage_keeps_latest_and_all_orders(
    paused_broker: tuple[str, str], tmp_path: Path
) -> None:
    bootstrap, container = paused_broker
    log = tmp_path / "sent.jsonl"
    config = SimulatorConfig(port=0, rate=10, order_rate=3, seed=22, sent_log=str(log))
    with running_simulator(config, INSTRUMENTS) as sim:
        values = connector_settings(
            bootstrap, sim.port, SPEC, tmp_path, MAX_IN_FLIGHT="2000", BACKPRESSURE_POLICY="conflate"
        )
        with running_connector(values) as connector:
            stats, line = connector.shard_stats[0], connector.stats[0]
            wait_until(lambda: stats.delivered.total() > 2000, 60, "a steady stream")
            _outage(container, connector, [])
            wait_until(lambda: stats.held == 0 and stats.in_flight == 0, 90, "held ticks to be produced")
            _drain(sim, connector)
        sim.flush_log()
    assert stats.conflated > 1000, "ticks were conflated during the outage"
    received = line.ticks.total()
    ticks = read_topic(bootstrap, values.kafka_topic_ticks, expect=received - stats.conflated)
    assert len(ticks) + stats.conflated == received, "every tick read is in Kafka or counted as conflated"
    latest: dict[int, int] = {}
    for s in sent_log(log, "tick"):
        latest[s["instrument_token"]] = s["volume_traded"]
    in_kafka = {(r.value["instrument_token"], r.value["volume_traded"]) for r in ticks}
    assert set(latest.items()) <= in_kafka, "each instrument's latest tick is in Kafka"
    orders = sent_log(log, "order")
    got = read_topic(bootstrap, values.kafka_topic_order_updates, expect=len(orders))
    assert sorted((r.value["order_id"], r.value["status"]) for r in got) == sorted(
        (o["order_id"], o["status"]) for o in orders
    ), "order updates are never conflated"


def test_dropped_connections_reconnect_and_resubscribe(kafka_bootstrap: str, tmp_path: Path) -> None:
    config = SimulatorConfig(port=0, rate=5, drop_every=2.0, seed=23)
    tokens = TOKENS[:50]
    with running_simulator(config, INSTRUMENTS) as sim:
        values = connector_settings(
            kafka_bootstrap, sim.port, ",".join(f"{t}@quote" for t in tokens), tmp_path
        )
        with running_connector(values) as connector:
            line = connector.stats[0]
            wait_until(lambda: line.reconnects >= 5, 60, "five reconnects")
            since_ms = time.time_ns() // 1_000_000
            wait_until(lambda: line.connected, 10, "the sixth connection")
            time.sleep(1.5)
        assert sim.connections >= 6
    ticks = read_topic(kafka_bootstrap, values.kafka_topic_ticks)
    after = {
        r.value["instrument_token"] for r in ticks if r.value["received_at"].timestamp() * 1000 >= since_ms
    }
    assert after == set(tokens), "ticks resume for every token after the last reconnect"
    assert {r.value["mode"] for r in ticks} == {"quote"}, "modes are restored on resubscribe"


def test_watchdog_reconnects_a_stalled_connection(kafka_bootstrap: str, tmp_path: Path) -> None:
    config = SimulatorConfig(port=0, rate=5, stall_every=3.0, stall_seconds=6.0, seed=25)
    with running_simulator(config, INSTRUMENTS) as sim:
        values = connector_settings(
            kafka_bootstrap, sim.port, ",".join(map(str, TOKENS[:5])), tmp_path, KITE_WATCHDOG_SECONDS="2"
        )
        with running_connector(values) as connector:
            line = connector.stats[0]
            wait_until(lambda: line.reconnects >= 1, 20, "the watchdog to reconnect")
            before = line.ticks.total()
            wait_until(lambda: line.ticks.total() > before + 10, 10, "ticks after the reconnect")
        assert sim.connections >= 2


def test_refused_token_reported_once_and_retried_when_the_file_changes(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("yesterdays-token\n")
    with running_simulator(SimulatorConfig(port=0, rate=5), INSTRUMENTS) as sim:
        values = connector_settings(
            kafka_bootstrap,
            sim.port,
            str(TOKENS[0]),
            tmp_path,
            KITE_ACCESS_TOKEN="",
            KITE_ACCESS_TOKEN_FILE=str(token_file),
        )
        with caplog.at_level(logging.INFO), running_connector(values) as connector:
            time.sleep(5)
            refused = [r for r in caplog.records if "HTTP 403" in r.getMessage()]
            assert len(refused) == 1, "reported once, not retried with the same token"
            assert sim.connections == 0
            sim.valid_tokens.add("todays-token")
            token_file.write_text("todays-token\n")
            wait_until(lambda: connector.stats[0].ticks.total() > 0, 15, "ticks with the new token")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "yesterdays-token" not in text and "todays-token" not in text


def test_sigterm_flushes_and_exits_zero(kafka_bootstrap: str, tmp_path: Path) -> None:
    config = SimulatorConfig(port=0, rate=20, order_rate=2, seed=24)
    with running_simulator(config, INSTRUMENTS) as sim:
        settings = connector_env(kafka_bootstrap, sim.port, SPEC, tmp_path, FLUSH_TIMEOUT_SECONDS="10")
        values = RunSettings.load(environ=settings)
        env = {**os.environ, **settings}
        proc = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "run"], env=env, stderr=subprocess.PIPE, text=True
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True)
        reader.start()
        time.sleep(12)
        assert proc.poll() is None, "".join(lines)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = proc.wait(timeout=30)
        took = time.monotonic() - started
        reader.join(5)
    assert code == 0, "".join(lines[-20:])
    assert took < 10 + 5, "exits within the flush bound"
    finals = [json.loads(line) for line in lines if '"final"' in line]
    assert finals, "final counts are reported"
    counts = finals[-1]["final"]
    assert counts["ticks"] > 1000
    ticks = read_topic(kafka_bootstrap, values.kafka_topic_ticks, expect=counts["ticks"])
    assert len(ticks) == counts["ticks"], "every tick it read is in Kafka"
    assert counts["delivered"] == counts["produced"]
