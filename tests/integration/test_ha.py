"""Hot standby against a real broker: the lease moves when its holder leaves or dies (and not otherwise),
a takeover fences the old active and writes exactly what Kafka lacks, once each, flagged."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from connector.config import RunSettings
from connector.ha import (
    INSTANCE_HEADER,
    REPLAYED_HEADER,
    TICK_ID_HEADER,
    HaCoordinator,
    HaSink,
    HaSinkConfig,
    HaStats,
    Ident,
    Lease,
    Role,
    Tail,
    committed_consumer,
    header,
    tick_ident,
)
from connector.orders import RECORD_ID_HEADER, OrderDesk, OrderRecord, open_order_log
from connector.sink import SinkConfig, TopicSpec, ensure_topics
from connector.stats import ShardStats
from tests.unit.helpers import eventually

pytestmark = pytest.mark.integration

Headers = list[tuple[str, str | bytes | None]]


def _until(done: Callable[[], bool], leases: list[Lease], timeout: float = 20.0) -> float:
    """Poll ``leases`` until ``done``; the seconds it took (fails after ``timeout``)."""
    started = time.monotonic()
    while not done():
        assert time.monotonic() - started < timeout, "not within the timeout"
        for lease in leases:
            lease.poll(0.02)
    return time.monotonic() - started


def _poll_for(seconds: float, leases: list[Lease]) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for lease in leases:
            lease.poll(0.02)


@pytest.fixture
def lease_topic(kafka_bootstrap: str) -> str:
    name = f"lease-{uuid.uuid4().hex[:8]}"
    ensure_topics({"bootstrap.servers": kafka_bootstrap}, [TopicSpec(name, 1, 1)])
    return name


def _lease(bootstrap: str, group: str, topic: str, name: str, session_ms: int = 1000) -> Lease:
    lease = Lease({"bootstrap.servers": bootstrap}, group, topic, session_ms, name)
    lease.join()
    return lease


def test_the_lease_stays_when_a_member_joins_and_moves_at_once_when_its_holder_leaves(
    kafka_bootstrap: str, lease_topic: str
) -> None:
    group = f"ha-{uuid.uuid4().hex[:8]}"
    a = _lease(kafka_bootstrap, group, lease_topic, "a")
    _until(lambda: a.held, [a])
    b = _lease(kafka_bootstrap, group, lease_topic, "b")
    _poll_for(3.0, [a, b])  # b's join rebalances the group: the lease stays where it is
    assert a.held and not b.held and a.lost is None
    a.close()
    took = _until(lambda: b.held, [b])
    b.close()
    print(f"\nlease handed over {took:.2f} s after its holder left")
    assert took < 2.0


_HOLDER = """
import sys
from connector.ha import Lease
lease = Lease({"bootstrap.servers": sys.argv[1]}, sys.argv[2], sys.argv[3], 1000, "victim")
lease.join()
while not lease.held:
    lease.poll(0.05)
print("held", flush=True)
while True:
    lease.poll(0.05)
"""


def test_a_killed_holder_is_replaced_after_the_session_timeout(
    kafka_bootstrap: str, lease_topic: str
) -> None:
    group = f"ha-{uuid.uuid4().hex[:8]}"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, kafka_bootstrap, group, lease_topic], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        standby = _lease(kafka_bootstrap, group, lease_topic, "standby")
        _poll_for(2.0, [standby])
        assert not standby.held
        holder.send_signal(signal.SIGKILL)
        took = _until(lambda: standby.held, [standby])
        standby.close()
    finally:
        holder.kill()
        holder.wait(10)
    print(f"\nlease taken over {took:.2f} s after its holder was SIGKILLed (session timeout 1 s)")
    assert 0.5 < took < 4.0


def test_a_session_timeout_the_brokers_refuse_is_a_clear_failure(
    kafka_bootstrap: str, lease_topic: str
) -> None:
    lease = _lease(kafka_bootstrap, f"ha-{uuid.uuid4().hex[:8]}", lease_topic, "x", session_ms=100)
    try:
        _until(lambda: lease.error is not None, [lease], timeout=30)
    finally:
        lease.consumer.close()
    assert lease.error is not None and "session timeout" in lease.error.lower(), lease.error
    assert not lease.held


def test_the_tail_is_read_in_rounds_each_from_where_the_last_stopped_committed_only(
    kafka_bootstrap: str,
) -> None:
    topic = f"tail-{uuid.uuid4().hex[:8]}"
    ensure_topics({"bootstrap.servers": kafka_bootstrap}, [TopicSpec(topic, 2, 1)])
    writer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"tail-{topic}"})
    writer.init_transactions(30)
    now = time.time_ns() // 1_000_000

    def write(partition: int, numbers: range, commit: bool = True) -> None:
        writer.begin_transaction()
        for n in numbers:
            writer.produce(topic, b"v", b"k", partition, timestamp=now, headers=[(TICK_ID_HEADER, b"%d" % n)])
        if commit:
            writer.commit_transaction(30)
        else:
            writer.flush(30)

    write(0, range(5))
    tail = Tail(
        committed_consumer({"bootstrap.servers": kafka_bootstrap}, "tail-test"),
        {topic: (now - 1000, _ident(topic))},
    )
    tail.read_to_end()  # partition 1 has nothing yet: it starts at its end
    assert (tail.read, {i[2] for i in tail.present}) == (5, {b"%d" % n for n in range(5)})
    write(1, range(5, 8))
    write(0, range(8, 10))
    write(0, range(10, 12), commit=False)  # open: not read, and not waited for
    tail.read_to_end()
    assert (tail.read, {i[2] for i in tail.present}) == (10, {b"%d" % n for n in range(10)})
    writer.abort_transaction(30)
    tail.consumer.close()


def _ident(topic: str) -> Callable[[Message], Ident | None]:
    return lambda msg: tick_ident(topic, msg.key() or b"", msg.headers())


# -- a takeover, end to end ---------------------------------------------------------------------------------
class _Set:
    """Topics, and what each instance of an HA set needs of them."""

    def __init__(self, bootstrap: str, tmp: Path) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.bootstrap, self.tmp, self.group = bootstrap, tmp, f"t{suffix}"
        self.settings = RunSettings.load(
            environ={
                "KITE_API_KEY": "k",
                "KITE_ACCESS_TOKEN": "t",
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "KAFKA_TOPIC_TICKS": f"ticks-{suffix}",
                "KAFKA_TOPIC_ORDER_UPDATES": f"orders-{suffix}",
                "KAFKA_TOPIC_DEAD_LETTERS": f"dlq-{suffix}",
                "KAFKA_TOPIC_GAPS": f"gaps-{suffix}",
            }
        )
        self.topics = SinkConfig.of(self.settings, "x").topics
        ensure_topics({"bootstrap.servers": bootstrap}, [TopicSpec(t, 3, 1) for t in self.topics.all()])
        self.lease_topic = f"lease-{suffix}"
        ensure_topics({"bootstrap.servers": bootstrap}, [TopicSpec(self.lease_topic, 1, 1)])

    def sink(self, instance: str, commit_interval: float = 0.1) -> HaSink:
        txn = f"kite-connector.{self.group}.0"
        config = HaSinkConfig(
            SinkConfig.of(self.settings, instance), txn, instance, commit_interval, 30.0, 1 << 28
        )
        return HaSink(0, config, ShardStats(), HaStats(), {}, lambda value: None)

    def coordinator(self, sink: HaSink, desk: OrderDesk) -> HaCoordinator:
        client = {"bootstrap.servers": self.bootstrap}
        lease = Lease(client, f"kite-connector.ha.{self.group}", self.lease_topic, 1000, "new")
        ticks = self.topics.ticks
        checked = {ticks: lambda msg: tick_ident(ticks, msg.key() or b"", msg.headers())}
        tail = committed_consumer(client, "tail")
        return HaCoordinator(lease, [sink], desk, sink.ha, tail, checked, self.topics.order_updates)


def _ticks(numbers: range, base_ms: int) -> list[tuple[bytes, bytes, int, Headers | None]]:
    return [(b"%d" % (n % 7), b"tick-%d" % n, base_ms + n, [(TICK_ID_HEADER, b"%d" % n)]) for n in numbers]


def _order(n: int, base_ms: int) -> OrderRecord:
    return OrderRecord(b"1", b"update-%d" % n, base_ms + n, f"rid-{n}")


@pytest.fixture
def threads() -> Iterator[list[tuple[threading.Thread, threading.Event]]]:
    started: list[tuple[threading.Thread, threading.Event]] = []
    yield started
    for thread, stop in started:
        stop.set()
        thread.join(10)


def _start(
    body: Callable[[threading.Event], None], threads: list[tuple[threading.Thread, threading.Event]]
) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=body, args=(stop,), daemon=True)
    thread.start()
    threads.append((thread, stop))


def test_takeover_fences_the_old_active_and_writes_what_kafka_lacks_once_flagged(
    kafka_bootstrap: str, tmp_path: Path, threads: list[tuple[threading.Thread, threading.Event]]
) -> None:
    ha = _Set(kafka_bootstrap, tmp_path)
    base = time.time_ns() // 1_000_000 - 60_000
    # The old active commits ticks 0-99 and order updates 0-1, then freezes with 100-119 in an open
    # transaction (produced, acknowledged, never committed).
    old = ha.sink("old")
    _start(old.run, threads)
    old.prepare()
    assert old.prepared.wait(30)
    old.activate(set())
    old.produce_tick_records(_ticks(range(100), base), 0.0)
    for n in range(2):
        record = _order(n, base)
        headers: Headers = [*record.headers()]
        old.produce(
            ha.topics.order_updates, record.key, record.value, record.timestamp_ms, headers, lambda ok: None
        )
    assert eventually(lambda: old.ha.commits >= 1 and not len(old.buffer))
    threads[0][1].set()
    threads[0][0].join(10)
    old.produce_tick_records(_ticks(range(100, 120), base), 0.0)
    old._pump()
    old.producer.flush(10)
    assert old.stats.delivered.total() == 122 and len(old.buffer) == 20
    # The standby received ticks 50-129 on its own line and order updates 0-2.
    new = ha.sink("new")
    new.produce_tick_records(_ticks(range(50, 130), base), 0.0)
    desk = OrderDesk(None, ha.topics.order_updates, [], open_order_log(tmp_path / "orders"))
    desk.commit([_order(n, base) for n in range(3)], None)
    _start(new.run, threads)
    coordinator = ha.coordinator(new, desk)
    _start(coordinator.run, threads)
    assert eventually(lambda: coordinator.role() == "active")
    assert new.ha.replayed == 30 and new.ha.present == 50  # ticks 100-129 written, 50-99 found
    old._commit()  # the frozen active resumes: fenced, nothing of it becomes visible
    assert old.role is Role.FENCED and old.failure() is not None and "fenced" in old.failure()  # type: ignore[operator]
    assert eventually(lambda: desk.pending() == 0 and not len(new.buffer))
    ticks = _read_committed(kafka_bootstrap, ha.topics.ticks)
    ids = Counter(int(header(h, TICK_ID_HEADER) or b"-1") for h in ticks)
    assert sorted(ids) == list(range(130)) and set(ids.values()) == {1}
    flagged = {int(header(h, TICK_ID_HEADER) or b"-1") for h in ticks if header(h, REPLAYED_HEADER)}
    assert flagged == set(range(100, 130))
    writers = Counter(header(h, INSTANCE_HEADER) for h in ticks)
    assert writers == {b"old": 100, b"new": 30}
    orders = _read_committed(kafka_bootstrap, ha.topics.order_updates)
    assert Counter(header(h, RECORD_ID_HEADER) for h in orders) == {b"rid-0": 1, b"rid-1": 1, b"rid-2": 1}
    assert [header(h, REPLAYED_HEADER) for h in orders if header(h, RECORD_ID_HEADER) == b"rid-2"] == [
        b"standby"
    ]


def _read_committed(bootstrap: str, topic: str) -> list[Headers]:
    """The headers of every committed record of ``topic``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        pending, out = set(partitions), []
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                error = msg.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                elif error is None:
                    headers = msg.headers()
                    out.append(list(headers) if isinstance(headers, list) else [])
        assert not pending, f"{topic} not read to its end"
        return out
    finally:
        consumer.close()


def test_a_standbys_producer_does_not_fence_the_active(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A standby's producer exists (its connections warm) but takes no producer id until it takes over."""
    ha = _Set(kafka_bootstrap, tmp_path)
    active = ha.sink("active")
    active.prepare()
    active._init_transactions()
    active.activate(set())
    standby = ha.sink("standby")  # the same transactional id
    now = time.time_ns() // 1_000_000
    standby.produce_tick_records(_ticks(range(10), now), 0.0)
    active.produce_tick_records(_ticks(range(10), now), 0.0)
    assert active.close(30) == 0 and active.failure() is None
    assert standby.stats.produced.total() == 0 and standby.close(1) == 0
    ticks = _read_committed(kafka_bootstrap, ha.topics.ticks)
    assert Counter(header(h, INSTANCE_HEADER) for h in ticks) == {b"active": 10}


def test_a_record_the_broker_refuses_is_found_and_dropped_and_the_rest_produced_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    ha = _Set(kafka_bootstrap, tmp_path)
    admin = {"bootstrap.servers": kafka_bootstrap}
    small = f"small-{uuid.uuid4().hex[:8]}"
    ensure_topics(admin, [TopicSpec(small, 1, 1, {"max.message.bytes": "2000"})])
    sink = ha.sink("active")
    sink.prepare()
    sink._init_transactions()
    sink.activate(set())
    now = time.time_ns() // 1_000_000
    ticks = _ticks(range(10), now)
    ticks[4] = (ticks[4][0], os.urandom(5000), now, ticks[4][3])  # the client takes it, the broker not
    sink._topics = dataclasses.replace(sink._topics, ticks=small)
    sink.produce_tick_records(ticks, 0.0)
    assert sink.close(60) == 0 and sink.failure() is None
    # Aborts: 10 records, 0-4, 4 alone (halving), plus those librdkafka needs to bump its epoch after a
    # refused batch left a gap in its sequence numbers: how many is librdkafka's business.
    assert sink.ha.refused == 1 and sink.ha.aborts >= 3
    ids = Counter(header(h, TICK_ID_HEADER) for h in _read_committed(kafka_bootstrap, small))
    assert ids == {b"%d" % n: 1 for n in range(10) if n != 4}, "the others once each"
