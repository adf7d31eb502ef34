"""The sink on librdkafka's mock cluster: the in-flight bound, the block backlog, conflation, waits."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, TopicPartition

from connector.sink import TICK_ID_HEADER, KafkaSink, tick_id_header
from connector.stats import ShardStats
from tests.unit.helpers import MOCK_CLUSTER, sink_config

TS = 1_700_000_000_000


def _sink(policy: str, bound: int, backlog: int = 100_000) -> KafkaSink:
    config = sink_config(BACKPRESSURE_POLICY=policy, MAX_IN_FLIGHT=str(bound), TICK_BACKLOG=str(backlog))
    return KafkaSink(config, ShardStats())


def test_conflate_holds_only_the_newest_tick_per_instrument() -> None:
    sink = _sink("conflate", 10)
    for i in range(100):
        sink.produce_ticks([(f"{i % 5}".encode(), f"v{i}".encode(), TS)], 0.0)
    assert sink.stats.in_flight == 10
    assert sink.stats.held == 5
    assert sink.stats.conflated == 100 - 10 - 5
    assert sink.close(10) == 0
    assert sink.stats.delivered.total() == 15
    assert sink.stats.failed.total() == 0


def test_while_ticks_are_held_newer_ones_are_held_too_so_none_overtakes() -> None:
    sink = _sink("conflate", 10)
    sink.produce_ticks([(f"{i}".encode(), b"first", TS) for i in range(10)], 0.0)
    sink.produce_ticks([(b"a", b"older", TS)], 0.0)
    assert sink.stats.held == 1
    sink.producer.flush(10)  # acknowledgements return, but held ticks are produced only by service()
    assert sink.stats.in_flight == 0
    sink.produce_ticks([(b"a", b"newer", TS)], 0.0)
    assert (sink.stats.held, sink.stats.conflated, sink.stats.in_flight) == (1, 1, 0)
    sink.service()
    assert (sink.stats.held, sink.stats.in_flight) == (0, 1)
    assert sink.close(10) == 0


def test_service_says_when_the_next_acknowledgement_may_come() -> None:
    sink = _sink("block", 100)
    assert sink.service() is None  # nothing in flight: the listener may wait as long as it likes
    sink.produce_ticks([(b"1", b"x", TS)], 0.0)
    due = sink.service()
    assert due is not None and 0 <= due <= 0.002  # not before the batch lingered (KAFKA_LINGER_MS=2)
    sink.producer.flush(10)
    assert sink.service() is None


def test_a_full_librdkafka_queue_is_waited_out_not_waited_on_forever() -> None:
    probes: list[float] = []
    config = sink_config({**MOCK_CLUSTER, "queue.buffering.max.messages": "3"}, MAX_IN_FLIGHT="100")
    sink = KafkaSink(config, ShardStats(), observe_latency=probes.append)
    sink.produce_ticks([(f"{i}".encode(), b"x", TS) for i in range(10)], 0.0)
    assert sink.close(10) == 0
    assert sink.stats.delivered.total() == 10
    assert len(probes) == 1  # one latency probe per message, also when its records went two ways


def test_block_backlogs_ticks_in_order_and_never_exceeds_the_bound() -> None:
    sink = _sink("block", 50, backlog=1000)
    peak = 0
    for i in range(2000):
        if not sink.saturated():
            sink.produce_ticks([(f"{i % 7}".encode(), f"{i}".encode(), TS)], 0.0)
        peak = max(peak, sink.stats.in_flight)
    assert peak == 50 and sink.saturated() and sink.stats.held == 1000
    produced = 50 + 1000
    while sink.stats.delivered.total() < produced:
        sink.service()
        peak = max(peak, sink.stats.in_flight)
    assert peak == 50
    assert sink.stats.held == 0 and not sink.saturated()
    assert sink.stats.backpressure_events == 1 and sink.stats.backpressure_seconds > 0
    assert sink.close(10) == 0


def test_a_record_outside_the_bound_reports_how_it_ended() -> None:
    sink = _sink("block", 1)
    sink.produce_ticks([(b"1", b"tick", TS)], 0.0)  # the bound is reached
    outcomes: list[bool] = []
    sink.produce("kite.order_updates", b"k", b"order", TS, None, outcomes.append)
    assert sink.stats.in_flight == 2, "records outside the tick bound do not wait behind ticks"
    assert sink.close(10) == 0
    assert outcomes == [True]


def _read_back(sink: KafkaSink, topic: str, count: int) -> list[tuple[bytes | None, object]]:
    """(key, headers) of the records on ``topic`` of the sink's mock cluster (any client can read it), by
    key."""
    metadata = sink.producer.list_topics(topic, timeout=5)
    broker = next(iter(metadata.brokers.values()))
    consumer = Consumer(
        {"bootstrap.servers": f"{broker.host}:{broker.port}", "group.id": "t", "log_level": 0}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in metadata.topics[topic].partitions])
    out: list[tuple[bytes | None, object]] = []
    for _ in range(50):
        if len(out) == count:
            break
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            out.append((msg.key(), msg.headers()))
    consumer.close()
    return sorted(out, key=lambda record: record[0] or b"")


@pytest.mark.parametrize("policy", ["block", "conflate"])
def test_named_ticks_carry_their_tick_id_header_also_when_they_wait(policy: str) -> None:
    config = sink_config(BACKPRESSURE_POLICY=policy, MAX_IN_FLIGHT="1")
    sink = KafkaSink(config, ShardStats(), {"tick": [("kind", b"tick")]})
    sink.produce_named_ticks([(b"1", b"a", TS, 0xCBF43926), (b"2", b"b", TS, 7)], 0.0)  # the second waits
    assert sink.stats.held == 1
    sink.produce_ticks([(b"3", b"c", TS)], 0.0)  # a tick without an id waits behind it, as it is
    assert sink.close(10) == 0
    assert _read_back(sink, sink.config.topics.ticks, 3) == [
        (b"1", [("kind", b"tick"), (TICK_ID_HEADER, b"\xcb\xf4\x39\x26")]),
        (b"2", [("kind", b"tick"), (TICK_ID_HEADER, b"\x00\x00\x00\x07")]),
        (b"3", [("kind", b"tick")]),
    ]
    assert tick_id_header(2**32 - 1) == ("kite.tick_id", b"\xff\xff\xff\xff")
