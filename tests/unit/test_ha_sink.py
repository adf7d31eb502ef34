"""The HA sink on librdkafka's mock cluster (transactions included): what a standby keeps and never
produces, a takeover's replay, commits on the interval, order updates told only once committed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from connector.errors import SinkError
from connector.ha import INSTANCE_HEADER, REPLAYED, TICK_ID_HEADER, HaSink, HaSinkConfig, HaStats, Role
from connector.stats import ShardStats
from tests.unit.helpers import sink_config

TS = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sink(
    clock: Callable[[], float] | None = None, buffer_seconds: float = 30, max_bytes: int = 1 << 30
) -> HaSink:
    config = HaSinkConfig(
        sink_config(), "kite-connector.test.0", "instance-a", 0.1, buffer_seconds, max_bytes
    )
    return HaSink(0, config, ShardStats(), HaStats(), {}, lambda value: None, clock=clock or Clock())


def _ticks(first: int, count: int) -> list[tuple[bytes, bytes, int, list[tuple[str, str | bytes | None]]]]:
    return [
        (b"%d" % n, b"tick-%d" % n, TS + n, [(TICK_ID_HEADER, b"%d" % n)])
        for n in range(first, first + count)
    ]


def test_a_standby_buffers_and_produces_nothing() -> None:
    clock = Clock()
    sink = _sink(clock, buffer_seconds=5)
    sink.produce_tick_records(_ticks(0, 10), 0.0)
    clock.now += 10
    sink.produce_tick_records(_ticks(10, 10), 0.0)  # the first ten are older than the window now
    sink.produce_gap(b"0", b"gap", TS)  # a standby's silence is not the set's
    assert len(sink.buffer) == 10 and sink.buffer.oldest_timestamp_ms() == TS + 10
    assert not sink.takes_orders() and not sink.saturated()
    with pytest.raises(SinkError):
        sink.produce("orders", b"1", b"update", TS, None, lambda ok: None)
    assert sink.stats.produced.total() == 0 and sink.close(1) == 0


def test_takeover_produces_what_kafka_lacks_flagged_then_live_records() -> None:
    sink = _sink(time.monotonic)
    sink.produce_tick_records(_ticks(0, 10), 0.0)
    sink.prepare()
    sink._init_transactions()  # what the sink's thread does once asked to prepare
    assert sink.prepared.is_set() and sink.role is Role.READY
    sink.produce_tick_records(_ticks(10, 2), 0.0)  # still buffered while taking over
    present = {("kite.ticks", b"%d" % n, b"%d" % n) for n in (1, 2, 3, 11)}
    assert sink.activate(present) == 8  # 0, 4-9, 10
    assert sink.ha.replayed == 8 and sink.ha.present == 4
    sink.produce_tick_records(_ticks(20, 5), 0.0)
    queued = [e.headers or [] for e in sink.buffer.take(100)]
    sink.buffer.unsend(len(queued))
    assert [REPLAYED in h for h in queued] == [True] * 8 + [False] * 5
    assert all((INSTANCE_HEADER, b"instance-a") in h for h in queued)
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert _until(lambda: sink.ha.commits >= 1 and not len(sink.buffer))
    finally:
        stop.set()
        thread.join(10)
    assert sink.stats.produced.total() == sink.stats.delivered.total() == 13


def test_an_order_update_is_told_done_only_once_its_transaction_committed() -> None:
    clock = Clock()
    sink = _sink(clock)
    sink.prepare()
    sink._init_transactions()
    sink.activate(set())
    told: list[bool] = []
    sink.produce("kite.order_updates", b"1", b"update", TS, [("kite.record_id", b"r1")], told.append)
    assert sink.takes_orders()
    sink._serve()  # produced into the open transaction; the interval has not passed
    sink.producer.flush(10)
    sink._serve()
    assert sink.stats.delivered.total() == 1 and told == [] and sink.ha.commits == 0
    clock.now += 0.1
    sink._serve()  # due: committed
    assert told == [True] and sink.ha.commits == 1 and len(sink.buffer) == 0


def test_close_commits_what_an_active_still_holds() -> None:
    sink = _sink()
    sink.prepare()
    sink._init_transactions()
    sink.activate(set())
    sink.produce_tick_records(_ticks(0, 1000), 0.0)
    assert sink.close(30) == 0
    assert sink.ha.commits == 1 and sink.stats.delivered.total() == 1000 and sink.role is Role.CLOSED


def _until(done: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Whether ``done`` became true within ``timeout`` (checked every 50 ms)."""
    tick = threading.Event()
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        tick.wait(0.05)
    return True
