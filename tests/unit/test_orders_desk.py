"""The order desk on librdkafka's mock cluster: one record per update whatever brought it, durable before
produced, produced again by the next sink until acknowledged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from connector.errors import MalformedFrame, SerializationError
from connector.kite import OrderUpdate, parse_text
from connector.orders import (
    ORIGIN_RECONCILIATION,
    ORIGIN_WEBSOCKET,
    FetchedOrder,
    OrderBook,
    OrderDesk,
    OrderLog,
    OrderRecord,
    record_id,
)
from connector.serde import AvroReader, DeadLetter, build_serializers
from connector.sink import MAX_RECORD_BYTES, KafkaSink
from connector.stats import ShardStats
from tests.unit.helpers import sink_config

TS = 1_700_000_000_000


def _frame(postback: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps({"type": "order", "data": {**postback, **changes}}).encode()


def _update(frame: bytes) -> OrderUpdate:
    update = parse_text(frame)
    assert isinstance(update, OrderUpdate)
    return update


def _desk(tmp_path: Path, **kwargs: Any) -> OrderDesk:
    serializers = build_serializers()
    return OrderDesk(serializers.order_update, "kite.order_updates", [], OrderLog(tmp_path / "wal"), **kwargs)


def _sink() -> KafkaSink:
    return KafkaSink(sink_config(), ShardStats())


def test_the_same_update_from_two_connections_is_one_record(tmp_path: Path, postback: dict[str, Any]) -> None:
    seen: list[OrderUpdate] = []
    book = OrderBook()
    desk = _desk(tmp_path, book=book, notify=seen.append)
    frame = _frame(postback)
    first = desk.take(_update(frame), frame, TS, ORIGIN_WEBSOCKET)
    again = desk.take(_update(frame), frame, TS + 5, ORIGIN_WEBSOCKET)
    assert isinstance(first, OrderRecord) and again is None
    assert first.record_id == record_id(frame) and first.origin == ORIGIN_WEBSOCKET
    assert first.key == str(postback["instrument_token"]).encode()
    assert AvroReader().read(first.value)[1]["order_id"] == postback["order_id"]
    assert len(seen) == 1 and (desk.stats.taken, desk.stats.duplicates) == (1, 1)
    assert book.reconcile([_update(frame)]) == [], "the book knows the socket delivered it"
    desk.close()


def test_an_update_that_cannot_be_a_record_is_a_dead_letter(tmp_path: Path, postback: dict[str, Any]) -> None:
    def failing(update: OrderUpdate, received_ms: int) -> bytes:
        raise SerializationError("price is not a number")

    desk = OrderDesk(failing, "t", [])
    frame = _frame(postback)
    letter = desk.take(_update(frame), frame, TS, ORIGIN_WEBSOCKET)
    assert letter == DeadLetter(frame, "price is not a number", "serializer")

    huge = OrderDesk(lambda u, ms: bytes(MAX_RECORD_BYTES + 1), "t", [])
    letter = huge.take(_update(frame), frame, TS, ORIGIN_WEBSOCKET)
    assert (
        isinstance(letter, DeadLetter)
        and letter.source == "sink"
        and "larger than a Kafka record" in letter.error
    )


def test_without_kafka_updates_only_reach_the_callback(postback: dict[str, Any]) -> None:
    seen: list[OrderUpdate] = []
    desk = OrderDesk(None, "t", [], notify=seen.append)
    frame = _frame(postback)
    assert desk.take(_update(frame), frame, TS, ORIGIN_WEBSOCKET) is None
    assert [u.order_id for u in seen] == [postback["order_id"]]


def test_committed_updates_are_durable_then_produced_and_done_on_ack(
    tmp_path: Path, postback: dict[str, Any]
) -> None:
    desk, sink = _desk(tmp_path), _sink()
    records = []
    for status in ("OPEN", "COMPLETE"):
        frame = _frame(postback, status=status)
        taken = desk.take(_update(frame), frame, TS, ORIGIN_WEBSOCKET)
        assert isinstance(taken, OrderRecord)
        records.append(taken)
    desk.commit(records, sink)
    assert desk.order_log is not None and len(desk.order_log) == 2, "in the log before any ack"
    assert sink.close(10) == 0
    assert desk.pending() == 0 and len(desk.order_log) == 0, "the acks marked them done"
    assert sink.stats.delivered["kite.order_updates"] == 2
    desk.close()


def test_what_an_earlier_run_or_a_replaced_sink_left_is_produced_by_the_next_sink(tmp_path: Path) -> None:
    with OrderLog(tmp_path / "wal") as earlier:
        earlier.append([OrderRecord(b"1", b"from-an-earlier-run", TS, "id-0")])
    desk = _desk(tmp_path)
    assert desk.pending() == 1
    stuck = _sink()
    desk.commit([OrderRecord(b"1", b"on-a-sink-that-fails", TS, "id-1")], stuck)
    assert desk.detach(stuck) == 1, "never polled: its update waits for another sink"
    replacement = _sink()
    assert desk.attach(replacement) == 2
    assert replacement.close(10) == 0
    assert desk.pending() == 0
    desk.close()
    with OrderLog(tmp_path / "wal") as after:
        assert after.pending() == []


def test_reconciled_orders_are_taken_by_the_publishing_listener(
    tmp_path: Path, postback: dict[str, Any]
) -> None:
    desk = _desk(tmp_path)
    frame = json.dumps({"type": "order", "data": postback}, sort_keys=True).encode()
    broken = MalformedFrame("an order in GET /orders is not a JSON object", b'{"type": "order", "data": 1}')
    desk.hand_over([FetchedOrder(_update(frame), frame)], [broken])
    record, letter = desk.reconciled()
    assert isinstance(record, OrderRecord) and record.origin == ORIGIN_RECONCILIATION
    assert record.record_id == record_id(frame)
    assert letter == DeadLetter(broken.raw, broken.reason, "reconciliation")
    assert desk.stats.reconciled == 1 and desk.reconciled() == []
    desk.close()


def test_an_order_log_that_fails_does_not_stop_updates_being_produced(tmp_path: Path) -> None:
    desk, sink = _desk(tmp_path), _sink()
    assert desk.order_log is not None
    desk.order_log.close()  # every append now fails
    desk.commit([OrderRecord(b"1", b"v", TS, "id-1")], sink)
    assert desk.stats.log_errors == 1
    assert sink.close(10) == 0 and desk.pending() == 0
    assert sink.stats.delivered["kite.order_updates"] == 1
