"""The Kafka side: one idempotent producer whose delivery callbacks bound what is in flight.

librdkafka runs delivery callbacks only inside ``poll``/``flush`` on the calling thread, so the
listener thread that produces also serves them; waiting for capacity means polling, never a lock.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from connector.config import RunSettings
from connector.errors import SinkError
from connector.logs import sample
from connector.sink._diagnose import KafkaAccessError, kind_of, refusal_of
from connector.stats import ShardStats

__all__ = [
    "MAX_RECORD_BYTES",
    "TICK_ID_HEADER",
    "KafkaSink",
    "OnDone",
    "RecordTooLarge",
    "SinkConfig",
    "Topics",
    "note_refusal",
    "tick_id_header",
]

log = sample(logging.getLogger("connector.sink"))  # an outage fails and retries many records at once
MAX_RECORD_BYTES = 900_000  # under librdkafka's default message.max.bytes (1,000,000), with room for headers
Headers = list[tuple[str, str | bytes | None]]
TickRecord = tuple[bytes, bytes, int]  # key, value, timestamp (ms)
NamedTickRecord = tuple[bytes, bytes, int, int]  # and the tick id
# A named tick's id as a header: the CRC-32 of its packet (connector.kite.packet_ids), 4 bytes big-endian.
TICK_ID_HEADER = "kite.tick_id"
Callback = Callable[[KafkaError | None, Message], None]
OnDone = Callable[[bool], None]  # told whether Kafka acknowledged the record
_ASSIGNED = re.compile(r'"idemp_state":\s*"Assigned"')  # librdkafka's statistics, "eos" object


def tick_id_header(tick_id: int) -> tuple[str, bytes]:
    return TICK_ID_HEADER, tick_id.to_bytes(4, "big")


class RecordTooLarge(SinkError):
    """A record larger than the producer's ``message.max.bytes``: it goes to the dead-letter topic."""


def note_refusal(
    stats: ShardStats, error: BaseException | KafkaError, client: dict[str, Any], topic: str
) -> KafkaAccessError | None:
    """Counts a producer's Kafka error by kind (``kafka_errors_total``); a refusal (credentials, TLS, an
    ACL) is also kept for /healthz until a record is delivered again, and returned."""
    err = error.args[0] if isinstance(error, KafkaException) and error.args else error
    kind = kind_of(err) if isinstance(err, KafkaError) else None
    if kind is not None:
        stats.kafka_errors[kind] += 1
    refusal = refusal_of(error, client, topic=topic)
    if refusal is not None:
        stats.kafka_refused = str(refusal)
        stats.kafka_refused_topic = topic if refusal.kind == "authorization" else None
        refused = stats.kafka_refused_topic
        stats.kafka_refused_delivered = stats.delivered[refused] if refused else stats.delivered.total()
    return refusal


@dataclass(frozen=True, slots=True)
class Topics:
    ticks: str = "kite.ticks"
    order_updates: str = "kite.order_updates"
    dead_letters: str = "kite.dead_letters"
    gaps: str = "kite.gaps"

    def all(self) -> tuple[str, str, str, str]:
        return (self.ticks, self.order_updates, self.dead_letters, self.gaps)

    def by_kind(self) -> dict[str, str]:
        """Record kind (tick, order_update, dead_letter, gap) → topic, as the serializers name them."""
        return {
            "tick": self.ticks,
            "order_update": self.order_updates,
            "dead_letter": self.dead_letters,
            "gap": self.gaps,
        }


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """What one connection's sink needs, taken from :class:`RunSettings` (which validated it)."""

    topics: Topics
    max_in_flight: int
    low_water: int  # the block policy resumes below this many in flight
    policy: str
    tick_backlog: int  # block policy: ticks waiting for room, in arrival order
    delivery_timeout_ms: int
    producer: dict[str, Any]  # librdkafka properties

    @classmethod
    def of(cls, s: RunSettings, client_id: str) -> SinkConfig:
        producer = {
            **s.kafka.client_config(),
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": s.kafka_compression,
            # ticks come in bursts (one WebSocket message each): batch the burst, not more
            "linger.ms": s.kafka_linger_ms,
            "socket.nagle.disable": True,  # a small produce request must not wait for the previous one's ACK
            "batch.num.messages": 10_000,
            "partitioner": "murmur2_random",  # where Java clients put the same key
            "message.timeout.ms": s.kafka_delivery_timeout_ms,
            # librdkafka's own queue is kept larger than our bound, so BufferError stays the exception.
            "queue.buffering.max.messages": max(2 * s.max_in_flight, 100_000),
            "queue.buffering.max.kbytes": 1_048_576,
            # Statistics say when the idempotent producer has its producer id (see KafkaSink.ready).
            "statistics.interval.ms": 100,
            **s.producer_overrides,
        }
        topics = Topics(
            s.kafka_topic_ticks, s.kafka_topic_order_updates, s.kafka_topic_dead_letters, s.kafka_topic_gaps
        )
        low_water = s.low_water_mark or s.max_in_flight // 2
        return cls(topics, s.max_in_flight, low_water, s.backpressure_policy, s.tick_backlog,
                   s.kafka_delivery_timeout_ms, producer)  # fmt: skip


class KafkaSink:
    """Produces keyed records, counts what is in flight, and applies the backpressure policy to ticks.

    Ticks are bounded by ``max_in_flight``; :meth:`produce` (order updates, dead letters) is not, so a
    record that must not wait behind ticks never does. What a record means is its caller's business: the
    sink only says, through ``on_done``, whether Kafka acknowledged it. The producer is created here, so
    it has its broker connections and producer id before the first record.
    """

    def __init__(
        self,
        config: SinkConfig,
        stats: ShardStats,
        headers: dict[str, Headers | None] | None = None,
        observe_latency: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self.stats = stats
        self._headers = headers or {}
        self._observe = observe_latency
        self._ready = False
        self.producer = Producer(
            {**config.producer, "stats_cb": self._on_stats},
            logger=sample(logging.getLogger("librdkafka")),
            error_cb=self._on_error,
        )
        self._refused: KafkaAccessError | None = None  # raised by the next service(), for the supervisor
        self._low_water = config.low_water
        # Ticks waiting for room, with their headers: key → (value, timestamp, headers) of the newest tick
        # of each instrument (conflate policy), or all in arrival order (block policy).
        self._held: dict[bytes, tuple[bytes, int, Headers | None]] = {}
        self._backlog: deque[tuple[bytes, bytes, int, Headers | None]] = deque()
        self._waiting_since: float | None = None  # when ticks began to be held or backlogged
        # Per message of ticks: (when, records produced in all after it). The oldest message not yet
        # settled (produced - in flight) says when the next acknowledgement may come.
        self._marks: deque[tuple[float, int]] = deque()
        self._linger = int(config.producer.get("linger.ms", 5)) / 1000
        self.stopping = False
        self._tick_topic = config.topics.ticks
        self._tick_headers = self._headers.get("tick")

    # -- lifecycle -------------------------------------------------------------------------------------
    def ready(self) -> bool:
        """The producer has its producer id: a record produced now is not held back waiting for one."""
        return self._ready

    def takes_orders(self) -> bool:
        return True

    def _on_stats(self, stats: str) -> None:
        if not self._ready and _ASSIGNED.search(stats) is not None:
            self._ready = True

    def stop(self) -> None:
        """Ask a blocked produce to give up waiting (called from another thread)."""
        self.stopping = True

    def close(self, timeout: float) -> int:
        """Produce waiting ticks, flush for up to ``timeout`` s; returns the records still unacknowledged."""
        self.stopping = True
        try:
            self._release_waiting(force=True)
        except SinkError:  # librdkafka's queue stayed full: what is still waiting is not produced
            self.stats.failed[self._tick_topic] += len(self._held) + len(self._backlog)
            self._held.clear()
            self._backlog.clear()
        remaining: int = self.producer.flush(timeout)
        self.stats.in_flight = remaining
        return remaining

    # -- produce ---------------------------------------------------------------------------------------
    def produce_ticks(self, batch: list[TickRecord], received: float) -> None:
        """(key, value, timestamp) of each tick of one WebSocket message; the hot path, kept flat.

        Where the whole message fits under the bound, nothing is checked per record. The first record
        of each message carries the receive→ack latency probe.
        """
        stats = self.stats
        if self._held or self._backlog or len(batch) > self.config.max_in_flight - stats.in_flight:
            self._produce_bounded(batch, self._timed(received))
            self._mark()
            return
        produce, topic, headers = self.producer.produce, self._tick_topic, self._tick_headers
        on_tick, callback = self._on_tick, self._timed(received)
        done = 0
        try:
            for key, value, timestamp_ms in batch:
                # positional (partition -1 = the partitioner's choice): cheaper than keywords on this path
                produce(topic, value, key, -1, callback, None, timestamp_ms, headers)
                callback = on_tick
                done += 1
        except BufferError:  # librdkafka's own queue is full: the rest goes the bounded way
            pass
        except Exception as exc:  # for the supervisor, which rebuilds the producer
            stats.failed[topic] += len(batch) - done  # what was not produced counts
            refusal = self._refusal(exc, topic)
            if refusal is not None:
                raise refusal from exc
            raise
        finally:
            stats.in_flight += done
            stats.produced[topic] += done
        if done < len(batch):  # ``callback`` is still the probe if the first record was refused
            self._produce_bounded(batch[done:], callback)
        self._mark()

    def produce_named_ticks(self, batch: list[NamedTickRecord], received: float) -> None:
        """As :meth:`produce_ticks`, each record with its tick id in the ``kite.tick_id`` header. Record by
        record, as each has its own headers: this is not the default path (an HA set names ticks)."""
        base = self._tick_headers or []
        records = [(key, value, timestamp_ms) for key, value, timestamp_ms, _ in batch]
        headers = [[*base, tick_id_header(tick_id)] for *_, tick_id in batch]
        self._produce_bounded(records, self._timed(received), headers)
        self._mark()

    def _produce_bounded(
        self, batch: list[TickRecord], callback: Callback, headers: list[Headers] | None = None
    ) -> None:
        """Record by record, applying the policy whenever the bound is reached; ``callback`` goes with the
        first record produced (the latency probe, where the message's first record is in this batch).
        ``headers``: each record's (else the tick topic's)."""
        stats, bound = self.stats, self.config.max_in_flight
        conflate = self.config.policy == "conflate"
        for i, (key, value, timestamp_ms) in enumerate(batch):
            record_headers = self._tick_headers if headers is None else headers[i]
            # While ticks wait, newer ones wait too, so no instrument's ticks overtake each other.
            if stats.in_flight >= bound or self._held or self._backlog:
                self._start_waiting()
                if conflate:
                    self._hold(key, value, timestamp_ms, record_headers)
                else:
                    self._backlog.append((key, value, timestamp_ms, record_headers))
                stats.held = len(self._held) + len(self._backlog)
                continue
            try:
                self._produce(self._tick_topic, key, value, timestamp_ms, callback, record_headers)
            except Exception:  # _produce counted the record itself; the rest of the message counts too
                stats.failed[self._tick_topic] += len(batch) - i - 1
                raise
            callback = self._on_tick

    def produce(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        timestamp_ms: int,
        headers: Headers | None,
        on_done: OnDone,
    ) -> None:
        """A record outside the tick bound (order updates). Raises :class:`RecordTooLarge` for one Kafka
        can never take, :class:`SinkError` when it cannot even be queued (stopping, or no room for the
        delivery timeout); otherwise ``on_done`` is told, from a later ``service()``, how it ended."""

        def settled(err: KafkaError | None, msg: Message) -> None:
            on_done(self._settled(err, msg))

        self._produce(topic, key, value, timestamp_ms, settled, headers)

    def produce_gap(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        self._produce(
            self.config.topics.gaps, key, value, timestamp_ms, self._settled, self._headers.get("gap")
        )

    def produce_dead_letter(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        self._produce(
            self.config.topics.dead_letters,
            key,
            value,
            timestamp_ms,
            self._settled,
            self._headers.get("dead_letter"),
        )

    def _produce(
        self, topic: str, key: bytes, value: bytes, timestamp_ms: int, callback: Any, headers: Headers | None
    ) -> None:
        producer = self.producer
        waited_since: float | None = None
        while True:
            try:
                # positional (partition -1 = the partitioner's choice): cheaper than keywords on this path
                producer.produce(topic, value, key, -1, callback, None, timestamp_ms, headers)
                break
            except BufferError:  # librdkafka's queue is full: it has room once a record has settled
                waited_since = waited_since or time.monotonic()
                self._check_wait(topic, waited_since)
                self._wait_for_a_settled_record()
            except KafkaException as exc:
                self.stats.failed[topic] += 1
                error = exc.args[0]
                if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    raise RecordTooLarge(
                        f"{len(value)} byte record refused for {topic}: {error.str()}"
                    ) from exc
                refusal = self._refusal(exc, topic)
                if refusal is not None:
                    raise refusal from exc
                raise
        stats = self.stats
        stats.in_flight += 1
        stats.produced[topic] += 1

    # -- backpressure ----------------------------------------------------------------------------------
    def service(self) -> float | None:
        """Serve delivery callbacks; produce waiting ticks once there is room.

        Returns the seconds until an acknowledgement may next arrive (0: any time now), or None when
        no record awaits one. No ack can come before its batch lingered, so the caller can sleep.
        Raises :class:`KafkaAccessError` once Kafka refused the producer (see :meth:`_on_error`).
        """
        try:
            self.producer.poll(0)
        except KafkaException as exc:  # a fatal error, e.g. no ACL lets it produce idempotently
            refusal = self._refusal(exc, self._tick_topic)
            if refusal is not None:
                raise refusal from exc
            raise
        if self._refused is not None:
            refused, self._refused = self._refused, None
            raise refused
        if (self._held or self._backlog) and self.stats.in_flight <= self._low_water:
            self._release_waiting()
        if not self.stats.in_flight:
            self._marks.clear()
            return None
        marks, settled = self._marks, self.stats.produced.total() - self.stats.in_flight
        while marks and marks[0][1] <= settled:
            marks.popleft()
        return max(0.0, marks[0][0] + self._linger - time.monotonic()) if marks else 0.0

    def _mark(self) -> None:
        marks = self._marks
        produced = self.stats.produced.total()
        if not marks or marks[-1][1] < produced:  # held (conflated) ticks add no mark
            marks.append((time.monotonic(), produced))

    def saturated(self) -> bool:
        """Block policy: the backlog is full, so the listener should stop reading until it drains."""
        return len(self._backlog) >= self.config.tick_backlog

    def _wait_for_a_settled_record(self) -> None:
        before = self.stats.in_flight
        self._serve_until(lambda: self.stats.in_flight < before, 0.1)

    def _check_wait(self, topic: str, since: float) -> None:
        """A record that cannot even be queued: give up on stop(), or after the delivery timeout."""
        timeout_ms = self.config.delivery_timeout_ms
        if self.stopping or (timeout_ms and time.monotonic() - since > timeout_ms / 1000):
            self.stats.failed[topic] += 1
            why = "stopping" if self.stopping else f"no room for {timeout_ms / 1000:.0f} s"
            raise SinkError(f"a record for {topic} could not be queued ({why})")

    def _serve_until(self, done: Callable[[], bool], step: float) -> None:
        started = time.monotonic()
        self.stats.backpressure_events += 1
        self.producer.poll(step)
        while not done() and not self.stopping:
            self.producer.poll(step)
        self.stats.backpressure_seconds += time.monotonic() - started

    def _start_waiting(self) -> None:
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
            self.stats.backpressure_events += 1

    def _hold(self, key: bytes, value: bytes, timestamp_ms: int, headers: Headers | None) -> None:
        if key in self._held:
            self.stats.conflated += 1  # the older held tick of this instrument is replaced, on purpose
        self._held[key] = (value, timestamp_ms, headers)

    def _release_waiting(self, force: bool = False) -> None:
        """Produce held (conflate) or backlogged (block) ticks while there is room, or all with ``force``."""
        bound, backlog = self.config.max_in_flight, self._backlog
        while backlog and (force or self.stats.in_flight < bound):
            key, value, timestamp_ms, headers = backlog.popleft()
            self._produce(self._tick_topic, key, value, timestamp_ms, self._on_tick, headers)
        while self._held and (force or self.stats.in_flight < bound):
            key, (value, timestamp_ms, headers) = self._held.popitem()
            self._produce(self._tick_topic, key, value, timestamp_ms, self._on_tick, headers)
        self.stats.held = len(self._held) + len(backlog)
        if not (self._held or backlog) and self._waiting_since is not None:
            self.stats.backpressure_seconds += time.monotonic() - self._waiting_since
            self._waiting_since = None

    # -- refusals: what retrying cannot fix is raised, to count as a connection failure ----------------
    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's error callback (inside poll, on this thread): counted by kind; wrong credentials or
        TLS are raised by the next :meth:`service` (the librdkafka client itself would retry for ever)."""
        self._refusal(err, self._tick_topic, raise_later=True)

    def _refusal(
        self, error: BaseException | KafkaError, topic: str, raise_later: bool = False
    ) -> KafkaAccessError | None:
        refusal = note_refusal(self.stats, error, self.config.producer, topic)
        if refusal is not None and raise_later:
            self._refused = self._refused or refusal
        return refusal

    # -- delivery callbacks (run inside poll/flush on the producing thread) -----------------------------
    def _settled(self, err: KafkaError | None, msg: Message) -> bool:
        stats = self.stats
        stats.in_flight -= 1
        topic = msg.topic() or "?"
        if err is None:
            stats.delivered[topic] += 1
            return True
        stats.failed[topic] += 1
        self._refusal(err, topic, raise_later=True)
        key = msg.key()
        log.error(
            "delivery failed to %s key %s: %s (failed so far: %d)",
            topic,
            key.decode(errors="replace") if key else None,
            err.str(),
            sum(stats.failed.values()),
        )
        return False

    def _on_tick(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:  # the common case, inlined: this runs once per tick
            stats = self.stats
            stats.in_flight -= 1
            stats.delivered[self._tick_topic] += 1
        else:
            self._settled(err, msg)

    def _timed(self, received: float) -> Callback:
        if self._observe is None:
            return self._on_tick
        observe = self._observe

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if self._settled(err, msg):
                observe(time.perf_counter() - received)

        return on_delivery
