"""The runtime end to end: simulator → WebSocket → connector → real Kafka → independent consumer."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pytest

from connector.app import Connector
from connector.simulator import (
    Simulator,
    SimulatorConfig,
    bundled_instruments,
    running_simulator,
    synthetic_instruments,
)
from tests.integration.helpers import connector_settings, read_topic, running_connector, sent_log, wait_until

pytestmark = pytest.mark.integration

INSTRUMENTS = bundled_instruments() + synthetic_instruments(200)
TRADABLE = [i.instrument_token for i in INSTRUMENTS if i.instrument_token & 0xFF != 9]


def _drain(sim: Simulator, connector: Connector) -> None:
    """Stop the simulator's stream and let the connector read what is still on the wire."""
    sim.paused = True
    line, stats = connector.stats[0], connector.shard_stats[0]
    time.sleep(1)
    wait_until(lambda: line.messages["heartbeat"] > 0 and stats.in_flight == 0, 30, "the stream to drain")


def test_steady_stream_every_sent_tick_and_order_is_in_kafka(kafka_bootstrap: str, tmp_path: Path) -> None:
    tokens = TRADABLE[:200]
    log = tmp_path / "sent.jsonl"
    config = SimulatorConfig(port=0, rate=2, order_rate=3, seed=11, sent_log=str(log))
    with running_simulator(config, INSTRUMENTS) as sim:
        values = connector_settings(
            kafka_bootstrap, sim.port, ",".join(f"{t}@full" for t in tokens), tmp_path
        )
        with running_connector(values) as connector:
            time.sleep(30)
            _drain(sim, connector)
        sim.flush_log()
        stats = connector.shard_stats[0]
    sent_ticks, sent_orders = sent_log(log, "tick"), sent_log(log, "order")
    assert len(sent_ticks) > 10_000 and len(sent_orders) > 60
    assert stats.failed.total() == 0 and stats.in_flight == 0

    ticks = read_topic(kafka_bootstrap, values.kafka_topic_ticks, expect=len(sent_ticks))
    assert len(ticks) == len(sent_ticks), "every tick read is in Kafka, once"
    assert all(r.key == str(r.value["instrument_token"]) for r in ticks)
    assert all(r.timestamp == round(r.value["exchange_timestamp"].timestamp() * 1000) for r in ticks), (
        "the Kafka timestamp is the exchange timestamp"
    )
    sent_full = [s for s in sent_ticks if s["mode"] == "full"]
    got = {(r.value["instrument_token"], r.value["volume_traded"], r.value["last_price"]) for r in ticks}
    assert {(s["instrument_token"], s["volume_traded"], s["last_price"]) for s in sent_full} <= got
    assert {r.value["instrument_token"] for r in ticks} == set(tokens)

    partitions: dict[str, set[int]] = defaultdict(set)
    volumes: dict[str, list[int]] = defaultdict(list)
    for r in sorted(ticks, key=lambda r: (r.partition, r.offset)):
        partitions[r.key or ""].add(r.partition)
        volumes[r.key or ""].append(int(r.value["volume_traded"]))  # volume only grows: order is visible
    assert all(len(p) == 1 for p in partitions.values()), "one partition per instrument"
    assert all(v == sorted(v) for v in volumes.values()), "each instrument's ticks in the order sent"

    orders = read_topic(kafka_bootstrap, values.kafka_topic_order_updates, expect=len(sent_orders))
    assert sorted((r.value["order_id"], r.value["status"]) for r in orders) == sorted(
        (o["order_id"], o["status"]) for o in sent_orders
    )
    assert all(r.key == str(r.value["instrument_token"]) for r in orders)


def test_malformed_messages_go_to_the_dead_letter_topic(kafka_bootstrap: str, tmp_path: Path) -> None:
    log = tmp_path / "sent.jsonl"
    config = SimulatorConfig(
        port=0, rate=5, order_rate=2, malformed_probability=0.2, seed=5, sent_log=str(log)
    )
    with running_simulator(config, INSTRUMENTS) as sim:
        values = connector_settings(kafka_bootstrap, sim.port, ",".join(map(str, TRADABLE[:20])), tmp_path)
        with running_connector(values) as connector:
            wait_until(lambda: connector.shard_stats[0].dead_letters.total() >= 5, 30, "dead letters")
            _drain(sim, connector)
        sim.flush_log()
    malformed = sent_log(log, "malformed")
    letters = read_topic(kafka_bootstrap, values.kafka_topic_dead_letters, expect=len(malformed))
    assert len(letters) == len(malformed)
    assert {r.value["source"] for r in letters} <= {"ws-binary", "ws-text"}
    assert all(r.value["raw"] and r.value["error"] for r in letters)
    assert len(read_topic(kafka_bootstrap, values.kafka_topic_ticks)) == len(sent_log(log, "tick"))
