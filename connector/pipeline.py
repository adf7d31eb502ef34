"""One listener's work per message: decode (codec) → serialize (serde) → produce (sink) or callbacks."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable

from connector.errors import MalformedFrame, SerializationError
from connector.kite import KiteError, KiteMessage, OrderUpdate, Tick, parse_binary, parse_text
from connector.logs import sample
from connector.reconcile import OrderBook, order_record_id
from connector.serde import DeadLetter, Serializers, native_transcode
from connector.sink import MAX_RECORD_BYTES, KafkaSink
from connector.spool import ORIGIN_RECONCILIATION, ORIGIN_WEBSOCKET, Entry, record_id
from connector.stats import Stats

__all__ = ["Inbox", "Pipeline", "TickCallback"]

log = sample(logging.getLogger("connector.pipeline"))  # a flood of bad frames logs a sample, with counts
TickCallback = Callable[[list[Tick]], None]
# Order updates from reconciliation, and the orders it could not read: handed over by its thread.
Inbox = deque[OrderUpdate | MalformedFrame]


class Pipeline:
    """Handles the messages of one connection on its listener thread.

    Undecodable input, and records Kafka cannot take for their size, become dead letters (raw bytes kept,
    cut to ``dead_letter_max_bytes``). Anything else that raises is the listener's supervisor's to handle.
    ``on_ticks`` / ``on_order_update`` / ``on_text`` let an embedding application see the same records.
    """

    def __init__(
        self,
        serializers: Serializers,
        sink: KafkaSink | None,
        stats: Stats,
        order_updates: bool = True,
        on_ticks: TickCallback | None = None,
        on_order_update: Callable[[OrderUpdate], None] | None = None,
        on_raw: Callable[[bool, bytes], None] | None = None,
        dead_letter_max_bytes: int = 262_144,
        order_book: OrderBook | None = None,
        inbox: Inbox | None = None,
        timestamp_window_ms: int = 600_000,
        subscribed: set[int] | None = None,
    ) -> None:
        self.serializers, self.sink, self.stats = serializers, sink, stats
        self.order_book, self.inbox = order_book, inbox
        # A Kafka timestamp this far from receipt (a wild exchange time in junk that decodes) would make the
        # broker refuse the record and its whole batch: such ticks get the receive time.
        self.timestamp_window_ms = timestamp_window_ms
        self.subscribed = subscribed  # every token this connection ever subscribed; None: any
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.order_updates = order_updates  # with several connections, only one publishes order updates
        self.on_ticks, self.on_order_update, self.on_raw = on_ticks, on_order_update, on_raw
        self._keys: dict[int, bytes] = {}
        # The native path writes the framing prefix of the Tick serializer (either framing) before each body.
        self._tick_prefix = serializers.tick.prefix
        self._transcode = native_transcode

    def service(self) -> float | None:
        inbox = self.inbox
        while inbox:  # appended by the reconciliation thread; popped only here
            self._reconciled(inbox.popleft())
        return None if self.sink is None else self.sink.service()

    def saturated(self) -> bool:
        return self.sink is not None and self.sink.saturated()

    def on_message(self, binary: bool, data: bytes, received_ms: int, received: float) -> None:
        if self.on_raw is not None:
            self.on_raw(binary, data)
        if binary:
            self._on_binary(data, received_ms, received)
        else:
            self._on_text(data, received_ms)

    def _key(self, token: int) -> bytes:
        key = self._keys.get(token)
        if key is None:
            key = self._keys[token] = str(token).encode()
        return key

    def _on_binary(self, data: bytes, received_ms: int, received: float) -> None:
        stats = self.stats
        if len(data) < 2:
            stats.messages["heartbeat"] += 1
            return
        stats.messages["binary"] += 1
        sink = self.sink
        # The native path takes bytes only (an embedding caller may hand over another buffer).
        if self._transcode is not None and self.on_ticks is None and sink is not None and type(data) is bytes:
            done = self._transcode(
                data, received_ms, self._tick_prefix, self.timestamp_window_ms, self.subscribed
            )
            if done is not None:  # a well-formed message, encoded in one native call
                records, ltp, quote, full, _segments = done  # _segments: see serde.Transcoded
                counts = stats.ticks
                for mode, count in (("ltp", ltp), ("quote", quote), ("full", full)):
                    if count:
                        counts[mode] += count
                sink.produce_ticks(records, received)
                return
        ticks, errors = parse_binary(data)
        if errors:  # one letter per message: it carries the whole message, however many faults it has
            first, more = errors[0], len(errors) - 1
            reason = f"{first.reason} (and {more} more faults)" if more else first.reason
            self._dead_letter(DeadLetter(data, reason, "ws-binary", first.offset), received_ms)
        subscribed = self.subscribed
        if subscribed is not None and any(t.instrument_token not in subscribed for t in ticks):
            strays = sorted({t.instrument_token for t in ticks} - subscribed)
            reason = f"ticks for tokens this connection never subscribed: {strays[:10]}"
            self._dead_letter(DeadLetter(data, reason, "ws-binary"), received_ms)
            ticks = [t for t in ticks if t.instrument_token in subscribed]
        if not ticks:
            return
        stats.ticks.update(tick.mode.value for tick in ticks)
        if self.on_ticks is not None:
            self.on_ticks(ticks)
        if sink is None:
            return
        serialize, key, stamp = self.serializers.tick, self._key, self._timestamp
        try:
            batch = [
                (key(tick.instrument_token), serialize(tick, received_ms), stamp(tick, received_ms))
                for tick in ticks
            ]
        except SerializationError as exc:
            self._dead_letter(DeadLetter(data, str(exc), "serializer"), received_ms)
            return
        sink.produce_ticks(batch, received)

    def _timestamp(self, tick: Tick, received_ms: int) -> int:
        ts = tick.exchange_timestamp_ms or received_ms
        return ts if abs(ts - received_ms) <= self.timestamp_window_ms else received_ms

    def _on_text(self, data: bytes, received_ms: int) -> None:
        self.stats.messages["text"] += 1
        try:
            record = parse_text(data)
        except MalformedFrame as exc:
            self._dead_letter(DeadLetter(exc.raw, exc.reason, "ws-text"), received_ms)
            return
        if isinstance(record, KiteError):
            self.stats.kite_errors += 1
            log.error("Kite sent an error: %s", record.message)
        elif isinstance(record, KiteMessage):
            log.info("Kite says: %s", record.message)
        elif self.order_updates:
            if self.order_book is not None:
                self.order_book.seen(record)
            self._order_update(record, data, received_ms, record_id(data), ORIGIN_WEBSOCKET)

    def _reconciled(self, item: OrderUpdate | MalformedFrame) -> None:
        received_ms = time.time_ns() // 1_000_000
        if isinstance(item, MalformedFrame):
            self._dead_letter(DeadLetter(item.raw, item.reason, "reconciliation"), received_ms)
            return
        self.stats.order_updates_reconciled += 1
        data = json.dumps({"type": "order", "data": item.to_kiteconnect()}, default=str).encode()
        self._order_update(item, data, received_ms, order_record_id(item), ORIGIN_RECONCILIATION)

    def _order_update(
        self, update: OrderUpdate, data: bytes, received_ms: int, rid: str, origin: str
    ) -> None:
        self.stats.order_updates += 1
        if self.on_order_update is not None:
            self.on_order_update(update)
        if self.sink is None:
            return
        try:
            value = self.serializers.order_update(update, received_ms)
        except SerializationError as exc:
            self._dead_letter(DeadLetter(data, str(exc), "serializer"), received_ms)
            return
        if len(value) > MAX_RECORD_BYTES:
            reason = f"order update of {len(value)} bytes: larger than a Kafka record may be"
            self._dead_letter(DeadLetter(data, reason, "sink"), received_ms)
            return
        key = self._key(update.instrument_token) if update.instrument_token is not None else b""
        self.sink.produce_order_update(Entry(key, value, received_ms, rid, origin))

    def _dead_letter(self, letter: DeadLetter, received_ms: int) -> None:
        self.stats.dead_letters[letter.source] += 1
        log.warning("dead letter (%s, %d bytes): %s", letter.source, len(letter.raw), letter.error)
        if self.sink is not None:
            letter = letter.capped(self.dead_letter_max_bytes)
            self.sink.produce_dead_letter(
                letter.source.encode(), self.serializers.dead_letter(letter, received_ms), received_ms
            )
