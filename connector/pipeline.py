"""One shard's work per message: decode (codec) → arbitrate (lines) → serialize (serde) → produce (sink)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from connector.arbiter import Arbiter
from connector.errors import MalformedFrame, SerializationError
from connector.gaps import Gap, GapWatch
from connector.kite import KiteError, KiteMessage, Tick, exchanges_of, packet_ids, parse_binary, parse_text
from connector.logs import sample
from connector.orders import ORIGIN_WEBSOCKET, OrderDesk, OrderRecord, Taken
from connector.serde import (
    DeadLetter,
    NamedTranscoded,
    Serializers,
    Transcoded,
    Transcoder,
    record_key,
    record_timestamp,
    transcode,
)
from connector.sink import KafkaSink
from connector.stats import ConnectionStats, ShardStats

__all__ = ["Pipeline", "TickCallback"]

log = sample(logging.getLogger("connector.pipeline"))  # a flood of bad frames logs a sample, with counts
TickCallback = Callable[[list[Tick]], None]


class Pipeline:
    """Handles the messages of one shard, from each of its lines (the caller serialises the calls).

    With an ``arbiter`` (several lines), a tick another line delivered first is dropped; with
    ``tick_ids``, the sink is handed each tick with its id (an HA set names ticks by it). Undecodable
    input, and records Kafka cannot take for their size, become dead letters (raw bytes kept, cut to
    ``dead_letter_max_bytes``). Anything else that raises is the listener's supervisor's to handle. Order
    updates go to ``orders`` (the desk shared by every shard); the pipeline stages what the desk makes of
    them and commits the batch after each socket read. With ``reconciled``, this pipeline also publishes
    what reconciliation found. A message after a silence ``gaps`` calls a gap is followed by its marker.
    ``on_ticks`` / ``on_raw`` let an embedding application see the same messages.
    """

    def __init__(
        self,
        serializers: Serializers,
        sink: KafkaSink | None,
        stats: ShardStats,
        orders: OrderDesk | None = None,
        reconciled: bool = False,
        on_ticks: TickCallback | None = None,
        on_raw: Callable[[bool, bytes], None] | None = None,
        dead_letter_max_bytes: int = 262_144,
        timestamp_window_ms: int = 600_000,
        subscribed: set[int] | None = None,
        arbiter: Arbiter | None = None,
        gaps: GapWatch | None = None,
        tick_ids: bool = False,
    ) -> None:
        self.serializers, self.sink, self.stats = serializers, sink, stats
        self.orders, self.reconciled = orders, reconciled
        self.arbiter, self.gaps = arbiter, gaps
        self.tick_ids = tick_ids
        self._staged: list[OrderRecord] = []  # order updates taken since the last service()
        # A Kafka timestamp this far from receipt (a wild exchange time in junk that decodes) would make the
        # broker refuse the record and its whole batch: such ticks get the receive time.
        self.timestamp_window_ms = timestamp_window_ms
        self.subscribed = subscribed  # every token this connection ever subscribed; None: any
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.on_ticks, self.on_raw = on_ticks, on_raw
        self._keys: dict[int, bytes] = {}
        # The native path writes the framing prefix of the Tick serializer (either framing) before each body.
        self._tick_prefix = serializers.tick.prefix
        self._transcode: Transcoder | None = transcode  # None: the generic path only (tests)

    def service(self) -> float | None:
        """After each socket read (and while idle): order updates made durable and produced, acks served."""
        orders = self.orders
        if orders is not None and self.reconciled:
            for taken in orders.reconciled():
                self._stage(taken)
        if self.sink is None:
            return None
        self._commit(self.sink)
        return self.sink.service()

    def retire(self) -> None:
        """This pipeline is being replaced: what it staged is made durable, for the next sink to produce."""
        self._commit(None)

    def _commit(self, sink: KafkaSink | None) -> None:
        if self._staged and self.orders is not None:
            staged, self._staged = self._staged, []
            self.orders.commit(staged, sink)

    def saturated(self) -> bool:
        return self.sink is not None and self.sink.saturated()

    def on_message(
        self, binary: bool, data: bytes, received_ms: int, received: float, line: ConnectionStats
    ) -> None:
        if self.gaps is not None and (gap := self.gaps.message(received_ms)) is not None:
            self._gap(gap, received_ms)
        if self.on_raw is not None:
            self.on_raw(binary, data)
        if binary:
            self._on_binary(data, received_ms, received, line)
        else:
            self._on_text(data, received_ms, line)

    def _key(self, token: int) -> bytes:
        key = self._keys.get(token)
        if key is None:
            key = self._keys[token] = record_key(token)
        return key

    def _on_binary(self, data: bytes, received_ms: int, received: float, line: ConnectionStats) -> None:
        if len(data) < 2:
            line.messages["heartbeat"] += 1
            return
        line.messages["binary"] += 1
        sink, transcode = self.sink, self._transcode
        # The native path takes bytes only (an embedding caller may hand over another buffer).
        if (
            transcode is not None
            and self.on_ticks is None
            and sink is not None
            and type(data) is bytes
            and self._transcoded(transcode, data, received_ms, received, line, sink)
        ):
            return
        ticks, errors = parse_binary(data)
        if errors:  # one letter per message: it carries the whole message, however many faults it has
            first, more = errors[0], len(errors) - 1
            reason = f"{first.reason} (and {more} more faults)" if more else first.reason
            self._dead_letter(DeadLetter(data, reason, "ws-binary", first.offset), received_ms)
        line.ticks.update(tick.mode.value for tick in ticks)
        named = self._named(data, ticks)
        if self.arbiter is not None and named is not None:
            wins = self.arbiter.first
            named = [(t, i) for t, i in named if wins(t.instrument_token, i, received_ms)]
            ticks = [t for t, _ in named]
        subscribed = self.subscribed
        if subscribed is not None and any(t.instrument_token not in subscribed for t in ticks):
            strays = sorted({t.instrument_token for t in ticks} - subscribed)
            reason = f"ticks for tokens this connection never subscribed: {strays[:10]}"
            self._dead_letter(DeadLetter(data, reason, "ws-binary"), received_ms)
            ticks = [t for t in ticks if t.instrument_token in subscribed]
            named = None if named is None else [(t, i) for t, i in named if t.instrument_token in subscribed]
        if not ticks:
            return
        line.ticks_won += len(ticks)
        self._fresh(line, sum({1 << (tick.instrument_token & 0xFF) for tick in ticks}))
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
        if self.tick_ids and named is not None:
            sink.produce_named_ticks([(*r, i) for r, (_, i) in zip(batch, named, strict=True)], received)
        else:
            sink.produce_ticks(batch, received)

    def _transcoded(
        self,
        transcode: Transcoder,
        data: bytes,
        received_ms: int,
        received: float,
        line: ConnectionStats,
        sink: KafkaSink,
    ) -> bool:
        """The message decoded, arbitrated and encoded in one native call, and produced; False when it is
        not entirely well formed or has a token never subscribed (the generic path then reports it)."""
        prefix, window = self._tick_prefix, self.timestamp_window_ms
        if self.tick_ids:
            named = transcode(data, received_ms, prefix, window, self.subscribed, self.arbiter, True)
            if named is None:
                return False
            if self._count(line, named):
                sink.produce_named_ticks(named[0], received)
            return True
        done = transcode(data, received_ms, prefix, window, self.subscribed, self.arbiter)
        if done is None:
            return False
        if self._count(line, done):
            sink.produce_ticks(done[0], received)
        return True

    def _count(self, line: ConnectionStats, done: Transcoded | NamedTranscoded) -> bool:
        """A transcoded message's ticks counted for its line; whether any of them won (has a record)."""
        records, ltp, quote, full, segments = done
        counts = line.ticks
        for mode, count in (("ltp", ltp), ("quote", quote), ("full", full)):
            if count:
                counts[mode] += count
        if not records:
            return False
        line.ticks_won += len(records)
        self._fresh(line, segments)
        return True

    def _named(self, data: bytes, ticks: list[Tick]) -> list[tuple[Tick, int]] | None:
        """Each tick with its tick id, where lines are arbitrated or the sink names ticks; None when not
        asked for, or when the message has faulty packets (its ticks are neither arbitrated nor named)."""
        if self.arbiter is None and not self.tick_ids:
            return None
        ids = packet_ids(data)
        if ids is None or len(ids) != len(ticks):
            return None
        return list(zip(ticks, ids, strict=True))

    @staticmethod
    def _fresh(line: ConnectionStats, segments: int) -> None:
        """Ticks of the segments set in the mask just came (for the feed-freshness gauge, per exchange)."""
        now, last = time.monotonic(), line.last_tick
        for exchange in exchanges_of(segments):
            last[exchange] = now

    def _timestamp(self, tick: Tick, received_ms: int) -> int:
        return record_timestamp(tick.exchange_timestamp_ms, received_ms, self.timestamp_window_ms)

    def _on_text(self, data: bytes, received_ms: int, line: ConnectionStats) -> None:
        line.messages["text"] += 1
        try:
            record = parse_text(data)
        except MalformedFrame as exc:
            self._dead_letter(DeadLetter(exc.raw, exc.reason, "ws-text"), received_ms)
            return
        if isinstance(record, KiteError):
            line.kite_errors += 1
            log.error("Kite sent an error: %s", record.message)
        elif isinstance(record, KiteMessage):
            log.info("Kite says: %s", record.message)
        else:
            line.order_updates += 1
            if self.orders is not None:
                self._stage(self.orders.take(record, data, received_ms, ORIGIN_WEBSOCKET))

    def _stage(self, taken: Taken | None) -> None:
        if isinstance(taken, OrderRecord):
            self._staged.append(taken)
        elif taken is not None:
            self._dead_letter(taken, time.time_ns() // 1_000_000)

    def _dead_letter(self, letter: DeadLetter, received_ms: int) -> None:
        self.stats.dead_letters[letter.source] += 1
        log.warning("dead letter (%s, %d bytes): %s", letter.source, len(letter.raw), letter.error)
        if self.sink is not None:
            letter = letter.capped(self.dead_letter_max_bytes)
            value = self.serializers.dead_letter(letter, received_ms)
            self.sink.produce_dead_letter(letter.source.encode(), value, received_ms)

    def _gap(self, gap: Gap, received_ms: int) -> None:
        log.warning(
            "shard %d: nothing received for %.1f s (%s): ticks of its %d instruments may be missing",
            gap.shard,
            (gap.end_ms - gap.start_ms) / 1000,
            gap.cause,
            len(gap.instrument_tokens),
        )
        if self.sink is not None:
            self.sink.produce_gap(
                str(gap.shard).encode(), self.serializers.gap(gap, received_ms), received_ms
            )
