"""The pipeline's routing, with a real sink on librdkafka's mock cluster: dead letters, order updates,
tick sanity (Kafka timestamps, unsubscribed tokens) on the native and the Python path alike."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest

from connector.arbiter import ArbiterPy, NativeArbiter
from connector.gaps import GapWatch
from connector.kite import encode_message, encode_packet, packet_ids, parse_binary
from connector.orders import OrderDesk
from connector.pipeline import Pipeline
from connector.serde import AvroReader, build_serializers
from connector.sink import KafkaSink, OnDone, SinkConfig
from connector.stats import ConnectionStats, ShardStats
from tests.conftest import fixture_json, fixture_packet
from tests.unit.helpers import sink_config


class _Captured(KafkaSink):
    """A real sink (librdkafka's mock cluster) that also keeps what it produced, for the test to read."""

    def __init__(self, config: SinkConfig) -> None:
        super().__init__(config, ShardStats())
        self.records: list[tuple[str, bytes, bytes, int]] = []
        self.ids: list[int] = []  # tick ids handed over, where the pipeline names ticks

    def produce_dead_letter(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        self.records.append((self.config.topics.dead_letters, key, value, timestamp_ms))
        super().produce_dead_letter(key, value, timestamp_ms)

    def produce_gap(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        self.records.append((self.config.topics.gaps, key, value, timestamp_ms))
        super().produce_gap(key, value, timestamp_ms)

    def produce_ticks(self, batch: list[tuple[bytes, bytes, int]], received: float) -> None:
        self.records += [(self.config.topics.ticks, key, value, ts) for key, value, ts in batch]
        super().produce_ticks(batch, received)

    def produce_named_ticks(self, batch: list[tuple[bytes, bytes, int, int]], received: float) -> None:
        self.records += [(self.config.topics.ticks, key, value, ts) for key, value, ts, _ in batch]
        self.ids += [tick_id for *_, tick_id in batch]
        super().produce_named_ticks(batch, received)

    def produce(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        timestamp_ms: int,
        headers: list[tuple[str, str | bytes | None]] | None,
        on_done: OnDone,
    ) -> None:
        self.records.append((topic, key, value, timestamp_ms))
        super().produce(topic, key, value, timestamp_ms, headers, on_done)


def _pipeline(
    orders: OrderDesk | None = None, cap: int = 1000, subscribed: set[int] | None = None, native: bool = True
) -> tuple[Pipeline, _Captured]:
    sink = _Captured(sink_config())
    serializers = build_serializers()
    orders = orders or OrderDesk(serializers.order_update, sink.config.topics.order_updates, [])
    pipeline = Pipeline(
        serializers, sink, sink.stats, orders, dead_letter_max_bytes=cap, subscribed=subscribed
    )
    if not native:
        pipeline._transcode = None
    return pipeline, sink


def test_a_malformed_message_is_one_dead_letter_cut_to_the_cap_whatever_its_faults() -> None:
    pipeline, sink = _pipeline(cap=1000)
    hostile = b"\xff\xff" + bytes(100_000)  # 65,535 packets of length 0: as many faults
    pipeline.on_message(True, hostile, 1_700_000_000_000, 0.0, ConnectionStats())
    pipeline.on_message(False, b"not json", 1_700_000_000_000, 0.0, ConnectionStats())
    assert sink.close(10) == 0
    letters = [AvroReader().read(value)[1] for _, _, value, _ in sink.records]
    assert [(d["source"], len(d["raw"])) for d in letters] == [("ws-binary", 1000), ("ws-text", 8)]
    assert letters[0]["raw_length"] == len(hostile)
    assert letters[0]["raw_sha256"] == hashlib.sha256(hostile).hexdigest()
    assert letters[0]["error"].startswith("unknown packet length 0 (and 50000 more faults)")
    assert letters[1]["raw_length"] is None, "input under the cap is kept whole"
    assert dict(sink.stats.dead_letters) == {"ws-binary": 1, "ws-text": 1}


def test_an_order_update_on_two_connections_is_published_once() -> None:
    serializers = build_serializers()
    desk = OrderDesk(serializers.order_update, "kite.order_updates", [])
    (a, sink_a), (b, sink_b) = _pipeline(desk), _pipeline(desk)
    frame = json.dumps({"type": "order", "data": fixture_json("postback.json")}).encode()
    lines = ConnectionStats(), ConnectionStats()
    for pipeline, line in zip((a, b), lines, strict=True):
        pipeline.on_message(False, frame, 1_700_000_000_000, 0.0, line)
        pipeline.service()  # commits what the read staged
    assert sink_a.close(10) == 0 and sink_b.close(10) == 0
    assert [t for t, *_ in sink_a.records + sink_b.records] == ["kite.order_updates"]
    assert lines[0].order_updates == lines[1].order_updates == 1, "each connection counts its own"
    assert desk.stats.duplicates == 1


def _message(*ticks: tuple[int, int]) -> bytes:
    """A binary message of full ticks (the captured packet) with these (token, exchange time ms)."""
    (tick,), _ = parse_binary(encode_message([fixture_packet("ticker_full")]))
    return encode_message(
        encode_packet(tick._replace(instrument_token=t, exchange_timestamp_ms=ts, last_trade_time_ms=ts))
        for t, ts in ticks
    )


@pytest.mark.parametrize("native", [True, False])
def test_a_wild_exchange_time_is_kept_in_the_record_but_not_used_as_kafka_timestamp(native: bool) -> None:
    now = time.time_ns() // 1_000_000 // 1000 * 1000
    hours_ahead, a_minute_ago = now + 2 * 3_600_000, now - 60_000
    pipeline, sink = _pipeline(native=native)
    message = _message((408065, hours_ahead), (884737, a_minute_ago))
    pipeline.on_message(True, message, now, 0.0, ConnectionStats())
    assert sink.close(10) == 0
    records = {key: (ts, AvroReader().read(value)[1]) for _, key, value, ts in sink.records}
    wild_ts, wild = records[b"408065"]
    assert wild_ts == now and wild["exchange_timestamp"].timestamp() * 1000 == hours_ahead
    assert records[b"884737"][0] == a_minute_ago, "a sane exchange time is the Kafka timestamp"
    assert sink.stats.delivered.total() == 2


@pytest.mark.parametrize("native", [True, False])
def test_a_tick_for_a_token_never_subscribed_is_dead_lettered_and_the_others_go_on(native: bool) -> None:
    now = time.time_ns() // 1_000_000
    pipeline, sink = _pipeline(subscribed={408065}, native=native)
    message = _message((408065, now), (131169028, now), (408065, now))
    pipeline.on_message(True, message, now, 0.0, ConnectionStats())
    assert sink.close(10) == 0
    topics = [topic for topic, *_ in sink.records]
    assert topics.count(sink.config.topics.ticks) == 2
    (letter,) = [
        AvroReader().read(v)[1] for t, _, v, _ in sink.records if t == sink.config.topics.dead_letters
    ]
    assert letter["raw"] == message and "never subscribed: [131169028]" in letter["error"]


ARBITERS = [ArbiterPy, *([NativeArbiter] if NativeArbiter is not None else [])]


def _counting(pipeline: Pipeline) -> list[int]:
    """Counts the messages the transcoder (the native path) took."""
    transcode, taken = pipeline._transcode, [0]
    assert transcode is not None

    def counted(*args: Any) -> Any:
        done = transcode(*args)
        taken[0] += done is not None
        return done

    pipeline._transcode = counted
    return taken


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("arbiter", ARBITERS, ids=lambda a: "native" if a is NativeArbiter else "python")
def test_two_lines_one_tick_first_arrival_wins(native: bool, arbiter: type[ArbiterPy]) -> None:
    now = time.time_ns() // 1_000_000
    sink = _Captured(sink_config())
    pipeline = Pipeline(build_serializers(), sink, sink.stats, arbiter=arbiter())
    if not native:
        pipeline._transcode = None
    taken = _counting(pipeline) if native else [0]
    a, b = ConnectionStats(), ConnectionStats()
    first = _message((408065, now), (884737, now))
    overlap = _message((884737, now), (408065, now + 1000))  # one tick both lines carry, one new
    pipeline.on_message(True, first, now, 0.0, a)
    pipeline.on_message(True, first, now + 3, 0.0, b)  # the same message, later, on line B
    pipeline.on_message(True, overlap, now + 5, 0.0, b)
    pipeline.on_message(True, overlap, now + 9, 0.0, a)
    assert sink.close(10) == 0
    assert len(sink.records) == 3, "each distinct tick once"
    assert (a.ticks.total(), a.ticks_won, b.ticks.total(), b.ticks_won) == (4, 2, 4, 1)
    assert taken[0] == (4 if native else 0), "with an arbiter, well-formed messages take the native path"


@pytest.mark.parametrize("native", [True, False])
def test_named_ticks_carry_the_id_of_their_own_packet(native: bool) -> None:
    now = time.time_ns() // 1_000_000
    sink = _Captured(sink_config())
    pipeline = Pipeline(build_serializers(), sink, sink.stats, subscribed={408065, 884737}, tick_ids=True)
    if not native:
        pipeline._transcode = None
    message = _message((408065, now), (884737, now), (408065, now + 1000))
    pipeline.on_message(True, message, now, 0.0, ConnectionStats())
    assert sink.ids == packet_ids(message)
    assert len(sink.records) == 3
    assert sink.close(10) == 0


def test_named_ticks_keep_their_ids_when_strays_are_dropped() -> None:
    """A stray token sends the message down the generic path, which drops it with its id."""
    now = time.time_ns() // 1_000_000
    sink = _Captured(sink_config())
    pipeline = Pipeline(build_serializers(), sink, sink.stats, subscribed={408065}, tick_ids=True)
    message = _message((408065, now), (131169028, now), (408065, now + 1000))
    pipeline.on_message(True, message, now, 0.0, ConnectionStats())
    every = packet_ids(message)
    assert every is not None and sink.ids == [every[0], every[2]], "the stray's id went with it"
    assert len([r for r in sink.records if r[0] == sink.config.topics.ticks]) == 2
    assert sink.close(10) == 0


def test_a_silence_longer_than_the_threshold_is_followed_by_its_gap_marker() -> None:
    now = time.time_ns() // 1_000_000
    sink = _Captured(sink_config())
    gaps = GapWatch(0, lambda: [408065, 884737], threshold_s=2)
    pipeline = Pipeline(build_serializers(), sink, sink.stats, gaps=gaps)
    line = ConnectionStats()
    gaps.cause("connection 0: connection lost (ConnectionResetError)")  # and back within the threshold
    for at in (now, now + 1000, now + 1500):  # heartbeats within the threshold: no gap
        pipeline.on_message(True, b"\x00", at, 0.0, line)
    gaps.cause("connection 0: no message for 5 s (watchdog)")
    pipeline.on_message(True, b"\x00", now + 9500, 0.0, line)
    assert sink.close(10) == 0
    ((topic, key, value, _),) = sink.records
    gap = AvroReader().read(value)[1]
    assert (topic, key) == ("kite.gaps", b"0")
    assert gap["instrument_tokens"] == [408065, 884737]
    assert (gap["start"].timestamp() * 1000, gap["end"].timestamp() * 1000) == (now + 1500, now + 9500)
    assert gap["cause"] == "connection 0: no message for 5 s (watchdog)"
