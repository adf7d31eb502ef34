"""The HA sink on librdkafka's mock cluster (transactions included): what a standby keeps and never
produces, a takeover's replay, commits on the interval, order updates told only once committed."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from connector.errors import SinkError
from connector.ha import INSTANCE_HEADER, REPLAYED, TICK_ID_HEADER, HaSink, HaSinkConfig, HaStats, Role
from connector.stats import ShardStats
from tests.unit.helpers import MOCK_CLUSTER, NO_BROKER, eventually, sink_config

TS = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sink(
    clock: Callable[[], float] | None = None,
    buffer_seconds: float = 30,
    max_bytes: int = 1 << 30,
    producer: dict[str, str] | None = None,
) -> HaSink:
    """On the mock cluster, unless ``producer`` says where Kafka is."""
    kafka = sink_config(producer or MOCK_CLUSTER)
    config = HaSinkConfig(kafka, "kite-connector.test.0", "instance-a", 0.1, buffer_seconds, max_bytes)
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
        assert eventually(lambda: sink.ha.commits >= 1 and not len(sink.buffer))
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


def test_a_record_larger_than_the_producer_takes_is_dropped_and_the_rest_committed() -> None:
    sink = _sink(producer={**MOCK_CLUSTER, "message.max.bytes": "2000"})
    sink.prepare()
    sink._init_transactions()
    sink.activate(set())
    ticks = _ticks(0, 5)
    ticks[2] = (b"2", b"x" * 5000, TS, [])
    sink.produce_tick_records(ticks, 0.0)
    assert sink.close(30) == 0 and sink.failure() is None
    assert (sink.stats.delivered.total(), sink.stats.failed.total(), sink.ha.refused) == (4, 1, 1)


class _Message:
    def __init__(self, value: bytes) -> None:
        self.value = value

    def topic(self) -> str:
        return "kite.ticks"


class _Broker:
    """Stands in for a transactional producer where the mock cluster cannot: a transaction whose records
    include one in ``refused`` fails whole at commit (as a refused batch does), with ``code``; so do the
    first ``timeouts`` commits, with a delivery timeout."""

    def __init__(self, refused: set[bytes], timeouts: int = 0) -> None:
        self.refused, self.timeouts = refused, timeouts
        self.open: list[tuple[bytes, Callable[[KafkaError | None, _Message], None]]] = []
        self.committed: list[bytes] = []

    def produce(
        self, topic: str, value: bytes, key: bytes, partition: int, callback: Any, *rest: Any
    ) -> None:
        self.open.append((value, callback))

    def begin_transaction(self) -> None:
        assert not self.open

    def poll(self, timeout: float = 0) -> int:
        return 0

    def abort_transaction(self, timeout: float) -> None:
        self.open.clear()

    def commit_transaction(self, timeout: float) -> None:
        records, self.open = self.open, []
        timed_out = self.timeouts > 0
        self.timeouts -= timed_out
        code = KafkaError._MSG_TIMED_OUT if timed_out else KafkaError.MSG_SIZE_TOO_LARGE
        failed = timed_out or any(value in self.refused for value, _ in records)
        for value, callback in records:
            callback(KafkaError(code) if failed else None, _Message(value))
        if failed:
            self.open = records  # aborted by the sink next
            raise KafkaException(KafkaError(code, txn_requires_abort=True))
        self.committed += [value for value, _ in records]


def _active_on(broker: _Broker) -> HaSink:
    sink = _sink()
    sink.producer = broker  # type: ignore[assignment]
    sink.activate(set())
    return sink


@pytest.mark.parametrize("refused", [{3}, {0, 1, 2}, {3, 17, 18, 39}, set(range(40))])
def test_records_kafka_refuses_are_found_by_halving_and_only_they_are_left_out(refused: set[int]) -> None:
    broker = _Broker({b"tick-%d" % n for n in refused})
    sink = _active_on(broker)
    sink.produce_tick_records(_ticks(0, 40), 0.0)
    assert sink.close(30) == 0 and sink.failure() is None
    assert broker.committed == [b"tick-%d" % n for n in range(40) if n not in refused], "once, in order"
    assert sink.ha.refused == len(refused)
    assert sink.ha.aborts <= len(refused) * 2 * 6 + 1, "a halving search, not one transaction per record"


def test_a_delivery_timeout_is_never_taken_for_a_refusal() -> None:
    broker = _Broker(set(), timeouts=5)
    sink = _active_on(broker)
    sink.produce_tick_records(_ticks(0, 1), 0.0)  # alone in its transaction, which times out, 5 times
    assert sink.close(30) == 0
    assert broker.committed == [b"tick-0"] and sink.ha.refused == 0 and sink.ha.aborts == 5


def test_a_refusal_is_counted_by_kind_and_shows_in_healthz_until_a_record_is_delivered() -> None:
    sink = _sink()
    sink.stats.in_flight = 2
    sink._delivered(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), _Message(b"tick-0"))  # type: ignore[arg-type]
    assert sink.stats.kafka_errors["authorization"] == 1
    assert "kite.ticks" in (sink.stats.refused() or ""), sink.stats.refused()
    sink._delivered(None, _Message(b"tick-1"))  # type: ignore[arg-type]
    assert sink.stats.refused() is None
    sink._on_error(KafkaError(KafkaError._AUTHENTICATION))
    assert sink.stats.kafka_errors["authentication"] == 1 and sink.stats.refused() is not None
    assert sink.close(5) == 0


class _Refusing(_Broker):
    """A transactional producer whose ``init_transactions``, commit or poll raises ``errors[call]``."""

    def __init__(self, **errors: KafkaError) -> None:
        super().__init__(set())
        self.errors = errors

    def _raise(self, call: str) -> None:
        if call in self.errors:
            raise KafkaException(self.errors[call])

    def init_transactions(self, timeout: float) -> None:
        self._raise("init")

    def commit_transaction(self, timeout: float) -> None:
        self._raise("commit")
        super().commit_transaction(timeout)

    def poll(self, timeout: float = 0) -> int:
        self._raise("poll")
        return 0


def test_a_refusal_at_init_transactions_or_at_commit_is_counted_and_shows_in_healthz() -> None:
    sink = _sink()
    sink.producer = _Refusing(init=KafkaError(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED))  # type: ignore[assignment]
    sink.role = Role.PREPARING
    sink._init_transactions()
    assert sink.stats.kafka_errors["authorization"] == 1 and sink.stats.refused() is not None
    assert sink.role is Role.FENCED and "init_transactions failed" in (sink.failure() or "")

    sink = _active_on(_Refusing(commit=KafkaError(KafkaError.CLUSTER_AUTHORIZATION_FAILED)))
    sink.produce_tick_records(_ticks(0, 3), 0.0)
    sink.close(5)
    assert sink.stats.kafka_errors["authorization"] == 1 and sink.stats.refused() is not None
    assert "commit failed" in (sink.failure() or ""), sink.failure()

    # A topic ACL removed at run time: the commit fails as abortable, the records are produced again
    # (and kept) until the ACL is back, loudly: counted at each commit and shown in /healthz.
    abortable = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, txn_requires_abort=True)
    sink = _active_on(_Refusing(commit=abortable))
    sink.produce_tick_records(_ticks(0, 3), 0.0)
    assert sink.close(1) == 3 and sink.failure() is None
    assert sink.stats.kafka_errors["authorization"] >= 1 and sink.ha.aborts >= 1
    assert "kite.ticks" in (sink.stats.refused() or ""), sink.stats.refused()


def test_a_fatal_error_raised_by_poll_fences_the_sink_instead_of_ending_its_thread() -> None:
    sink = _active_on(_Refusing(poll=KafkaError(KafkaError._FATAL, fatal=True)))
    sink.produce_tick_records(_ticks(0, 3), 0.0)
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()
    assert eventually(lambda: sink.role is Role.FENCED, 10)
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and sink.ha.fenced == 1 and "fenced" in (sink.failure() or "")


def test_a_standby_serves_its_producer_so_a_broker_it_cannot_reach_is_counted() -> None:
    """A standby's producer keeps connections (its producer id is ready before a takeover); what goes
    wrong with them reaches its error callback, served only while someone polls."""
    sink = _sink(producer=NO_BROKER)
    with contextlib.suppress(KafkaException):
        sink.producer.list_topics(timeout=0.5)  # a connection attempt, to a port nothing listens on
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert eventually(lambda: sink.stats.kafka_errors["transport"] > 0, 15), "the error callback ran"
        assert sink.role is Role.STANDBY and sink.failure() is None, "an unreachable broker is not fatal"
    finally:
        stop.set()
        thread.join(5)
    assert sink.close(1) == 0
