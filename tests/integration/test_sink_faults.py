"""The producer side against no broker at all: bounded waits, sampled logs, order updates kept in the log."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from connector.errors import SinkError
from connector.logs import sample
from connector.orders import OrderDesk, OrderLog, OrderRecord
from connector.sink import KafkaSink
from connector.stats import ShardStats
from tests.unit.helpers import NO_BROKER, sink_config

pytestmark = pytest.mark.integration
TS = 1_700_000_000_000


def test_librdkafka_connection_errors_are_sampled(caplog: pytest.LogCaptureFixture) -> None:
    logger = sample(logging.getLogger("test.librdkafka"), interval=30)
    producer = Producer(
        {"bootstrap.servers": "127.0.0.1:1", "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 10},
        logger=logger,
    )
    with caplog.at_level(logging.DEBUG, "test.librdkafka"):
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            producer.poll(0.1)
    refused = [r for r in caplog.records if "Connection refused" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in refused]


def test_a_record_that_cannot_be_queued_gives_up_at_stop_not_never() -> None:
    config = sink_config({**NO_BROKER, "queue.buffering.max.messages": "3"}, MAX_IN_FLIGHT="1000")
    sink = KafkaSink(config, ShardStats())
    threading.Timer(0.5, sink.stop).start()
    started = time.monotonic()
    with pytest.raises(SinkError, match="could not be queued \\(stopping\\)"):
        sink.produce_ticks([(b"1", b"x", TS)] * 10, 0.0)
    assert time.monotonic() - started < 2
    assert sink.stats.failed[config.topics.ticks] == 10 - 3, "what was not queued is counted"
    sink.close(0.1)


def test_undelivered_order_updates_stay_in_the_order_log_for_the_next_run(tmp_path: Path) -> None:
    path = tmp_path / "orders.wal"
    desk = OrderDesk(None, "kite.order_updates", [], OrderLog(path))
    sink = KafkaSink(sink_config(NO_BROKER), ShardStats())
    desk.commit([OrderRecord(b"779521", b"order-1", TS, "id-1")], sink)
    sink.close(0.5)
    assert desk.detach(sink) == 1
    desk.close()
    assert desk.stats.left_in_log == 1
    with OrderLog(path) as reopened:  # as the next process opens it
        assert [r.value for _, r in reopened.pending()] == [b"order-1"]


def test_an_order_update_that_cannot_be_queued_at_close_stays_in_the_log(tmp_path: Path) -> None:
    path = tmp_path / "orders.wal"
    desk = OrderDesk(None, "kite.order_updates", [], OrderLog(path))
    sink = KafkaSink(sink_config({**NO_BROKER, "queue.buffering.max.messages": "1"}), ShardStats())
    sink.produce_ticks([(b"1", b"tick", TS)], 0.0)  # librdkafka's queue is now full
    sink.stop()
    desk.commit([OrderRecord(b"779521", b"order-1", TS, "id-1")], sink)  # durable, then not queued
    sink.close(0.2)
    desk.detach(sink)
    desk.close()
    assert desk.stats.left_in_log == 1
    with OrderLog(path) as reopened:
        assert [r.record_id for _, r in reopened.pending()] == ["id-1"]
