"""Order updates end to end: the socket's and the ones only Kite's order book has (reconciliation), each
with a stable id, read back with an independent consumer."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from connector.serde import AvroReader
from connector.simulator import SimulatorConfig, bundled_instruments, running_simulator, synthetic_instruments
from tests.harness import earliest_consumer
from tests.integration.helpers import connector_settings, running_connector, sent_log, wait_until

pytestmark = pytest.mark.integration

INSTRUMENTS = bundled_instruments() + synthetic_instruments(20)
TOKENS = [i.instrument_token for i in INSTRUMENTS if i.instrument_token & 0xFF != 9][:10]


Read = tuple[dict[str, object], dict[str, str]]


def _read_with_headers(bootstrap: str, topic: str, expect: int) -> list[Read]:
    consumer, reader = earliest_consumer(bootstrap, topic, "orders"), AvroReader()
    out: list[Read] = []
    deadline = time.monotonic() + 60
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for msg in consumer.consume(100, 0.5):
                assert msg.error() is None, msg.error()
                pairs: list[tuple[str, bytes]] = msg.headers() or []  # type: ignore[assignment]
                headers = {name: value.decode() for name, value in pairs if name.startswith("kite.")}
                out.append((reader.read(msg.value() or b"")[1], headers))
    finally:
        consumer.close()
    return out


def test_order_updates_the_socket_never_sent_are_published_from_the_order_book(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    log = tmp_path / "sent.jsonl"
    config = SimulatorConfig(
        port=0, http_port=0, rate=2, order_rate=5, order_hide_every=3, seed=41, sent_log=str(log)
    )
    with running_simulator(config, INSTRUMENTS) as sim:
        assert sim.http is not None
        values = connector_settings(
            kafka_bootstrap,
            sim.port,
            ",".join(map(str, TOKENS)),
            tmp_path,
            KITE_API_URL=f"http://127.0.0.1:{sim.http.port}",
            ORDER_RECONCILE_INTERVAL_SECONDS="2",
        )
        with running_connector(values) as connector:
            stats, orders = connector.shard_stats[0], connector.runtime.orders.stats
            wait_until(lambda: len(sent_log(log, "order_update_hidden")) >= 5, 60, "hidden order updates")
            sim.paused = True
            time.sleep(1)
            hidden = {(o["order_id"], o["status"]) for o in sent_log(log, "order_update_hidden")}
            wait_until(lambda: orders.reconciled >= len(hidden), 30, "reconciliation")
            wait_until(lambda: stats.in_flight == 0, 30, "acknowledgements")
    socket = {(o["order_id"], o["status"]) for o in sent_log(log, "order")}
    records = _read_with_headers(kafka_bootstrap, values.kafka_topic_order_updates, len(socket) + len(hidden))
    by_origin: dict[str, set[tuple[object, object]]] = {"websocket": set(), "reconciliation": set()}
    for value, headers in records:
        assert len(headers["kite.record_id"]) == 32
        by_origin[headers["kite.origin"]].add((value["order_id"], value["status"]))
    assert hidden <= by_origin["reconciliation"], "every update the socket never sent came from the book"
    assert socket <= by_origin["websocket"], "every update the socket sent is in Kafka"
    assert orders.reconcile_errors == 0
