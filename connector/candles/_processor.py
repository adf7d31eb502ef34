"""The I/O shell of ``kite-connector candles``: ticks topic in, bars out, exactly once.

Each poll cycle is one Kafka transaction holding the bars and late ticks it produced, the changed state of
the partitions it read (open bars per instrument and the watermark, in a compacted state topic whose
partition p holds the state of ticks partition p), and the consumer offsets (``send_offsets_to_transaction``).
Either all of it becomes visible or none. On (re)assignment a partition's state is read back from the state
topic up to the last committed transaction, checked against the group's committed offset, and reading
resumes at that offset: a crash at any point neither loses nor repeats a bar.

Gap markers (KAFKA_TOPIC_GAPS) are read by every instance, outside the group, and applied to every
partition held (:meth:`PartitionBars.gap`): bars they overlap are written with ``gap`` true, or written
again (``revision`` 1) when the marker came after the bar closed. Markers are not state: after a restore
they are read again from a little before the oldest watermark, as applying one twice changes nothing.

It refuses to run blind: at start the newest ticks must decode (a Confluent-framed topic needs
SCHEMA_REGISTRY_URL), and a stream of nothing but undecodable ticks for CANDLES_BLIND_SECONDS stops it
(exit 3) rather than dead-lettering everything. Transactional calls go through :mod:`._txn`.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from threading import Event, Thread
from types import FrameType
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from connector.candles._avro import serializer
from connector.candles._bars import GapSpan, PartitionBars, parse_intervals
from connector.candles._decode import TickDecoder
from connector.candles._metrics import CandleMetrics
from connector.candles._status import BlindWatch, Counts, ProcessorFailed, Status
from connector.candles._txn import AbortRequired, TransactionCalls, describe, kafka_error
from connector.config import CandlesSettings
from connector.errors import ConfigError, ConnectorError, Interrupted, SerializationError, SinkError
from connector.logs import sample
from connector.metrics import serve_http
from connector.serde import CONFLUENT_MAGIC, AvroReader, DeadLetter, check_registry, registry_client
from connector.sink import Access, Cluster, KafkaAccessError, TopicSpec, refusal_of

__all__ = ["BLIND_MIN_RECORDS", "EXIT_FAILED", "CandleProcessor", "check_sample", "serve"]

log = logging.getLogger("connector.candles")
dead_letter_log = sample(logging.getLogger("connector.candles.dead_letters"))
EXIT_FAILED = 3  # kept failing at run time, as for `kite-connector run` (2 is a start-up error)
BLIND_MIN_RECORDS = 100  # a window of fewer undecodable ticks is a few bad records, not blindness

_KAFKA_TIMEOUT = 30.0
_STATS_EVERY = 30.0
_OBSERVE_EVERY = 1.0  # lag gauges
_PROBE_RECORDS = 5  # newest ticks per partition decoded at start
# init_transactions in short calls (it is resumable): a restart right after a crash meets the previous
# instance's transaction being aborted (CONCURRENT_TRANSACTIONS) and says so, instead of one long wait.
_INIT_SLICE = 0.25
# Markers are read again after a restore from this long before the oldest watermark less a bar: a marker
# is written when its silence ends, and exchange times (of the watermark) lag the connector's clock.
_GAP_SLACK_MS = 300_000


@dataclass(slots=True)
class _Partition:
    core: PartitionBars
    next_offset: int | None  # next tick to read; None until known
    last_arrival: float  # monotonic time of the last tick read
    changed: bool = False  # something to checkpoint in this transaction
    seq: int = 0  # checkpoints written, also in the committed offset's metadata (see _restore)


class CandleProcessor:
    """Consume-transform-produce of ticks into bars; ``run`` until ``stop`` is set."""

    def __init__(self, settings: CandlesSettings, clock: Callable[[], float] = time.time) -> None:
        self.s = settings
        self.client = settings.kafka.client_config()  # every client of the processor connects the same way
        self.intervals = parse_intervals(settings.candles_intervals)
        self.grace_ms: int = settings.candles_grace_ms
        self.ticks_topic: str = settings.kafka_topic_ticks
        self.gaps_topic: str = settings.kafka_topic_gaps
        self.gap_partitions = 0  # of the gaps topic; 0: bars are not flagged
        self.gaps_reader: Consumer | None = None
        self.topics = {i.label: f"{settings.candles_topic_prefix}{i.label}" for i in self.intervals}
        self.eos: bool = settings.candles_exactly_once
        self.instance: str = settings.candles_instance_id or socket.gethostname()
        self.transactional_id = f"{settings.candles_group}-{self.instance}"
        self.clock = clock
        self.status = Status()
        self.counts = self.status.counts
        self.cycle = Counts()  # what the open transaction wrote; counted once it commits
        self.blind = BlindWatch(settings.candles_blind_seconds, BLIND_MIN_RECORDS)
        self.blind_exit: float = settings.candles_blind_exit_seconds
        self.retry_seconds: float = settings.candles_transaction_retry_seconds
        self.txn = TransactionCalls(self.retry_seconds, self.status)
        # commit and abort are resumable: a call that times out while the transaction can still complete
        # is retried. librdkafka's own default (-1) would wait the whole transaction timeout.
        self.call_timeout = settings.candles_transaction_timeout_ms / 2000
        self.parts: dict[int, _Partition] = {}
        self._in_txn = False
        self._cycle_start = time.monotonic()
        self._failing_since: float | None = None  # first abort since the last commit
        self.started = False  # the main loop runs (a signal before that ends start-up at once)
        if settings.kafka_framing == "confluent" and not settings.registry.url:
            raise ConfigError("KAFKA_FRAMING=confluent needs SCHEMA_REGISTRY_URL")
        self.registry = registry_client(settings.registry.client_config()) if settings.registry.url else None
        self.reader = AvroReader(registry_client=self.registry)
        self.decoder = TickDecoder(self.reader)

    # Set-up

    def _ensure_topics(self) -> int:
        """Creates missing output topics and checks the ACLs the processor needs (a refusal stops start-up
        naming it); returns the partition count of the ticks topic."""
        cluster = Cluster(self.client)
        meta = cluster.metadata()
        if self.registry is not None:
            check_registry(self.registry, self.s.registry.url or "", self.s.registry.timeout_seconds)
        ticks = meta.topics.get(self.ticks_topic)
        if ticks is None or ticks.error is not None:
            raise ConfigError(
                f"ticks topic {self.ticks_topic!r} does not exist: start `kite-connector run` first "
                "or set KAFKA_TOPIC_TICKS"
            )
        partitions = len(ticks.partitions)
        self.gap_partitions = self._gaps_topic(meta, cluster)
        state_topic = self.s.candles_state_topic
        state = meta.topics.get(state_topic)
        if state is not None and len(state.partitions) < partitions:
            raise ConfigError(
                f"state topic {state_topic} has {len(state.partitions)} partitions, fewer than the "
                f"{partitions} of {self.ticks_topic}: delete it (bars restart from the committed offsets "
                "with empty state) or name another CANDLES_STATE_TOPIC"
            )
        rf, n = self.s.layout.replication_factor, self.s.layout.topic_partitions
        wanted = [TopicSpec(t, n, rf) for t in (*self.topics.values(), self.s.candles_late_topic)]
        wanted.append(TopicSpec(self.s.kafka_topic_dead_letters, n, rf))
        wanted.append(
            TopicSpec(state_topic, partitions, rf, config={
                "cleanup.policy": "compact", "segment.bytes": str(64 << 20),
                "min.compaction.lag.ms": "0", "min.cleanable.dirty.ratio": "0.1",
            })
        )  # fmt: skip
        cluster.create(wanted, meta)
        written = [t.name for t in wanted]
        read = [self.ticks_topic, state_topic] + ([self.gaps_topic] if self.gap_partitions else [])
        cluster.check(Access(write=written, read=read, groups=[self.s.candles_group]))
        return partitions

    def _gaps_topic(self, meta: Any, cluster: Cluster) -> int:
        """Partitions of the gaps topic; 0 (bars not flagged, said once) when it is off or missing. A
        topic the metadata leaves out for want of an ACL is a refusal (named, exit 2), not a missing one."""
        if not self.gaps_topic:
            return 0
        topic = meta.topics.get(self.gaps_topic)
        if topic is None or topic.error is not None:
            cluster.check(Access(read=[self.gaps_topic]))
            log.warning(
                "gaps topic %s does not exist: bars are not flagged (`kite-connector run` creates it; "
                "set KAFKA_TOPIC_GAPS to the connector's, or to nothing to silence this)", self.gaps_topic,
            )  # fmt: skip
            return 0
        return len(topic.partitions)

    def _writers(self) -> None:
        """Bars and dead letters are written through the registry client the reader uses (its basic auth
        and CA included)."""
        framing = self.s.kafka_framing
        url = self.s.registry.url or ""
        self.bar_writers = {
            label: serializer("candle", t, framing, self.registry, url) for label, t in self.topics.items()
        }
        self.dlq_writer = serializer(
            "dead_letter", self.s.kafka_topic_dead_letters, framing, self.registry, url
        )

    def _clients(self) -> tuple[Consumer, Producer, Consumer]:
        group = self.s.candles_group
        consumer = Consumer({
            **self.client, "group.id": group, "group.instance.id": self.instance,
            "isolation.level": "read_committed", "enable.auto.commit": False,
            "auto.offset.reset": "earliest" if self.s.candles_from_beginning else "latest",
            "session.timeout.ms": self.s.candles_session_timeout_ms,
            "enable.partition.eof": False, "log_level": 4,
        })  # fmt: skip
        producer_config: dict[str, Any] = {
            **self.client, "enable.idempotence": True, "linger.ms": 5,
            "compression.type": "lz4", "log_level": 4,
        }  # fmt: skip
        if self.eos:
            producer_config["transactional.id"] = self.transactional_id
            producer_config["transaction.timeout.ms"] = self.s.candles_transaction_timeout_ms
        producer = Producer(producer_config)
        if self.gap_partitions:
            self.gaps_reader = self._reader("gaps", eof=False)
        return consumer, producer, self._reader("restore", eof=True)

    def _reader(self, name: str, eof: bool) -> Consumer:
        """A consumer of committed records at positions it is given (assign), outside the group: its group
        id, ``<group>.<name>``, is never joined nor committed to."""
        return Consumer({
            **self.client, "group.id": f"{self.s.candles_group}.{name}", "enable.auto.commit": False,
            "isolation.level": "read_committed", "enable.partition.eof": eof, "log_level": 4,
        })  # fmt: skip

    def _check_framing(self, partitions: int) -> None:
        """Decodes the newest few ticks of every partition before reading any (see :func:`check_sample`)."""
        start = []
        for p in range(partitions):
            low, high = self.restorer.get_watermark_offsets(
                TopicPartition(self.ticks_topic, p), _KAFKA_TIMEOUT
            )
            if high > low:
                start.append(TopicPartition(self.ticks_topic, p, max(low, high - _PROBE_RECORDS)))
        values = [msg.value() or b"" for msg in self._read_to_end(start)]
        failed = check_sample(self.ticks_topic, values, self.decoder, self.s.registry.url)
        if failed:
            log.warning(
                "%d of the newest %d records of %s do not decode as ticks (%s): they go to %s",
                len(failed), len(values), self.ticks_topic, failed[0], self.s.kafka_topic_dead_letters,
            )  # fmt: skip

    # Main loop

    def run(self, stop: Event) -> None:
        partitions = self._ensure_topics()
        log.info(
            "candles: %s (%d partitions) -> %s; instance %s, exactly-once %s",
            self.ticks_topic, partitions, ", ".join(self.topics.values()), self.instance, self.eos,
        )  # fmt: skip
        self._writers()
        self.consumer, self.producer, self.restorer = self._clients()
        try:
            self._check_framing(partitions)
            if self.eos:
                self.txn("init_transactions", lambda: self.producer.init_transactions(_INIT_SLICE))
            self.status.unassigned_since = time.monotonic()
            self.consumer.subscribe(
                [self.ticks_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self.started = self.status.running = True
            self._loop(stop)
            self._commit()
        except BaseException:
            self._abandon()  # never commit a cycle that did not finish
            raise
        finally:
            self.status.running = False
            self._close()
            self._log_stats()

    def _close(self) -> None:
        """Closes the clients; a failure here is logged, never raised over the error that ended the run."""
        closing: list[tuple[str, Callable[[], object]]] = [
            ("consumer", self.consumer.close),  # revokes: the callback commits what is pending
            ("restorer", self.restorer.close),
            ("producer", lambda: self.producer.flush(_KAFKA_TIMEOUT)),
        ]
        if self.gaps_reader is not None:
            closing.append(("gaps reader", self.gaps_reader.close))
        for what, close in closing:
            try:
                close()
            except (KafkaException, ConnectorError) as exc:
                log.warning("closing the %s: %s", what, exc)

    def _loop(self, stop: Event) -> None:
        interval = self.s.candles_commit_interval_ms / 1000
        idle = self.s.candles_idle_seconds
        next_stats = time.monotonic() + _STATS_EVERY
        next_observe = 0.0
        while not stop.is_set():
            batch = self.consumer.consume(10_000, 0.1)
            now = time.monotonic()
            try:
                self._poll_gaps()
                if batch:
                    self._process(batch)
                if idle:
                    self._advance_idle(now, idle)
            except AbortRequired as exc:  # the transaction failed while being filled
                self._rewind(str(exc), rewind=True)
            if self.blind.blind(now):
                self._stop_blind(now, stop)
                break  # stopped by a signal while reporting it: a clean stop, nothing left open
            if now - self._cycle_start >= interval:
                self._commit()
            if now >= next_observe:
                next_observe = now + _OBSERVE_EVERY
                self._observe()
            if now >= next_stats:
                next_stats = now + _STATS_EVERY
                self._log_stats()

    def _stop_blind(self, now: float, stop: Event) -> None:
        """Every tick of a whole window was undecodable: abort the open transaction, stop reading, report it
        (gauge, /healthz) for CANDLES_BLIND_EXIT_SECONDS, long enough for an alert to fire, then fail; a
        signal meanwhile is a clean stop (exit 0)."""
        reason = self.blind.reason(now)
        self.status.blind = reason
        log.error("%s; reading stopped, exiting in %.0f s (are KAFKA_TOPIC_TICKS and SCHEMA_REGISTRY_URL the "
                  "connector's?)", reason, self.blind_exit)  # fmt: skip
        self._abandon(retry=True)
        if not stop.wait(self.blind_exit):
            raise ProcessorFailed(reason)

    def _observe(self) -> None:
        """The lag gauges: ticks not yet read, and how far the oldest watermark is behind the wall clock."""
        lag, oldest = 0, None
        for p, part in self.parts.items():
            if part.next_offset is not None:
                _, high = self.consumer.get_watermark_offsets(
                    TopicPartition(self.ticks_topic, p), cached=True
                )
                lag += max(0, high - part.next_offset)
            watermark = part.core.watermark
            if watermark > 0 and (oldest is None or watermark < oldest):
                oldest = watermark
        self.status.lag_records = lag if self.parts else None
        self.status.watermark_lag_seconds = None if oldest is None else self.clock() - oldest / 1000

    def _log_stats(self) -> None:
        c = self.counts
        bars = sum(c.bars.values())
        log.info(
            "candles: %d ticks, %d bars, %d late ticks, %d dead letters, %d commits, %d aborts, %d open bars",
            c.ticks, bars, c.late, c.dead_letters, c.commits, c.aborts,
            sum(p.core.open_bars() for p in self.parts.values()),
            extra={"fields": {"ticks": c.ticks, "bars": bars, "late_ticks": c.late,
                              "dead_letters": c.dead_letters, "commits": c.commits, "aborts": c.aborts}},
        )  # fmt: skip

    def _abandon(self, retry: bool = False) -> None:
        """Aborts the open transaction and forgets the partitions' state (it is read back on assignment).
        With ``retry`` the abort must complete (the processor goes on); without, one attempt (it stops)."""
        if self._in_txn and self.eos:
            if retry:
                self.txn("abort_transaction", self._abort_call)
            else:
                try:
                    self._abort_call()
                except KafkaException as exc:
                    log.warning("could not abort the open transaction (%s): it aborts when it times out", exc)
        self._in_txn = False
        self.cycle = Counts()
        self.parts.clear()

    def _abort_call(self) -> None:
        self.producer.abort_transaction(self.call_timeout)

    def _send(self, topic: str, value: bytes, key: bytes | None, **kwargs: Any) -> None:
        """produce(), waiting while the local queue is full (bounded by the producer's delivery timeout)."""
        while True:
            try:
                self.producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:
                self.producer.poll(0.05)
            except KafkaException as exc:
                err = kafka_error(exc)
                if err is None or not self.eos:
                    raise
                if err.fatal() or err.code() == KafkaError._FATAL:  # produce() flags neither
                    raise ProcessorFailed(f"produce: fatal Kafka error {self._fatal_cause(err)}") from None
                if err.code() == KafkaError._STATE:  # a record of this transaction failed for good
                    raise AbortRequired("produce", describe(err)) from None  # (librdkafka logged why)
                raise

    def _fatal_cause(self, err: KafkaError) -> str:
        """produce() reports any fatal error as _FATAL; the transactional API names it (_FENCED, ...),
        once its state machine has taken the error in: asked a few times, for at most a second."""
        for _ in range(10):
            try:
                self.producer.abort_transaction(0.1)
            except KafkaException as exc:
                cause = kafka_error(exc)
                if cause is not None and cause.fatal():
                    return describe(cause)
            else:
                break
        return describe(err)

    def _begin(self) -> None:
        if not self._in_txn:
            if self.eos:
                self.txn("begin_transaction", self.producer.begin_transaction)
            self._in_txn = True
            self.cycle = Counts()
            self._cycle_start = time.monotonic()

    def _process(self, batch: list[Message]) -> None:
        self._begin()
        parts, decode, blind = self.parts, self.decoder.decode, self.blind
        now = time.monotonic()
        counts, cycle = self.counts, self.cycle
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise ProcessorFailed(f"Kafka consumer: fatal error {describe(err)}")
                log.warning("Kafka consumer: %s", err)
                continue
            part = parts.get(msg.partition())  # type: ignore[arg-type]
            if part is None:  # not (or no longer) ours: its owner reads it from the committed offset
                continue
            value = msg.value() or b""
            offset: int = msg.offset()  # type: ignore[assignment]
            part.next_offset = offset + 1
            part.last_arrival = now
            part.changed = True
            counts.ticks += 1
            try:
                tick = decode(value)
            except SerializationError as exc:
                blind.undecodable(now, str(exc))
                self._dead_letter(msg, value, exc)
                continue
            if blind.count:
                blind.decoded()
            late = part.core.add(*tick)
            if late:
                cycle.late += 1
                self._send(self.s.candles_late_topic, value, msg.key(), timestamp=tick.time_ms, headers=[
                    ("candles.late_for", ",".join(late)),
                    ("candles.source", f"{self.ticks_topic}/{msg.partition()}/{offset}"),
                ])  # fmt: skip
            if part.core.closed:
                self._emit(part)

    def _dead_letter(self, msg: Message, value: bytes, exc: Exception) -> None:
        self.cycle.dead_letters += 1
        where = f"{msg.topic()}/{msg.partition()}/{msg.offset()}"
        dead_letter_log.warning(
            "undecodable record at %s (%s): sent to %s", where, exc, self.s.kafka_topic_dead_letters
        )
        letter = DeadLetter(value, f"{where}: {exc}", "candles", msg.offset()).capped(
            self.s.dead_letter_max_bytes
        )
        self._send(
            self.s.kafka_topic_dead_letters, self.dlq_writer(letter, int(self.clock() * 1000)), b"candles",
            headers=self.dlq_writer.headers,
        )  # fmt: skip

    def _emit(self, part: _Partition) -> None:
        now_ms = int(self.clock() * 1000)
        bars = self.cycle.bars
        for candle in part.core.closed:
            writer = self.bar_writers[candle.interval]
            self._send(
                self.topics[candle.interval], writer(candle, now_ms), str(candle.instrument_token).encode(),
                timestamp=candle.start, headers=writer.headers,
            )  # fmt: skip
            if candle.revision:
                self.cycle.amended += 1
            else:
                bars[candle.interval] += 1
        part.core.closed.clear()

    # Gap markers

    def _poll_gaps(self) -> None:
        """Applies the markers that came since the last cycle; bars written again go in this cycle."""
        if self.gaps_reader is None:
            return
        flagged = False
        for msg in self.gaps_reader.consume(1000, 0):
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise ProcessorFailed(f"Kafka consumer of {self.gaps_topic}: fatal error {describe(err)}")
                log.warning("Kafka consumer of %s: %s", self.gaps_topic, err)
                continue
            span = self._span(msg, live=True)
            if span is not None:
                n, late = self._apply(span)
                self.counts.gap_markers += 1
                self.counts.gap_late += late
                flagged |= n > 0
        if flagged:
            self._begin()  # the flags reach the state in this cycle, not at the partition's next tick
        for part in self.parts.values():
            if part.core.closed:  # bars written again, by these markers or by a catch-up's
                self._begin()
                self._emit(part)

    def _span(self, msg: Message, live: bool) -> GapSpan | None:
        """The marker in ``msg``. An undecodable one is skipped: dead-lettered when read live; when read
        again after a restore (it may have been dead-lettered already, or have come while the processor
        was down) logged and counted, so that a restore never writes the same dead letter twice."""
        value = msg.value() or b""
        try:
            kind, v = self.reader.read(value)
            if kind != "Gap":
                raise SerializationError(f"a {kind} record, not a Gap")
            return GapSpan(_ms(v["start"]), _ms(v["end"]), frozenset(v["instrument_tokens"]))
        except (SerializationError, KeyError, TypeError) as exc:
            if live:
                self._begin()
                self._dead_letter(msg, value, exc)
            else:
                self.counts.gap_undecodable += 1
                dead_letter_log.warning(
                    "undecodable gap marker at %s/%s/%s (%s): skipped",
                    msg.topic(), msg.partition(), msg.offset(), exc,
                )  # fmt: skip
            return None

    def _apply(self, span: GapSpan) -> tuple[int, int]:
        """Applies a marker to every partition held (a partition it changed is checkpointed); returns the
        bars it flagged and the instrument-intervals it came late for, over them all."""
        flagged = late = 0
        for part in self.parts.values():
            n, part_late = part.core.gap(span)
            flagged, late = flagged + n, late + part_late
            part.changed |= n > 0
        return flagged, late

    def _catch_up_gaps(self) -> None:
        """After a restore: applies the markers that may still touch its bars again, then reads live from
        where this stopped (so a marker written meanwhile is neither skipped nor needed twice)."""
        if self.gaps_reader is None:
            return
        start = self._gap_offsets()
        resume = {tp.partition: tp.offset for tp in start}
        for msg in self._read_to_end(start):
            resume[msg.partition()] = msg.offset() + 1  # type: ignore[index,operator]
            span = self._span(msg, live=False)
            if span is not None:
                self._apply(span)  # lateness is counted when a marker is read live, not again here
        self.gaps_reader.assign([TopicPartition(self.gaps_topic, p, o) for p, o in resume.items()])

    def _gap_offsets(self) -> list[TopicPartition]:
        """Where to read markers from again: a little before the oldest watermark, less the longest bar,
        over the partitions with state; a partition with none yet reads from the start
        (CANDLES_FROM_BEGINNING) or from a little before now."""
        topic, partitions = self.gaps_topic, range(self.gap_partitions)
        slack = self.grace_ms + self.intervals[-1].ms + _GAP_SLACK_MS
        seen = [part.core.max_seen for part in self.parts.values()]
        stateless = not seen or any(t <= 0 for t in seen)
        if stateless and self.s.candles_from_beginning:
            return [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        since = min([t for t in seen if t > 0] + ([int(self.clock() * 1000)] if stateless else []))
        # The ends first: a marker committed after the search below is then read, not skipped.
        ends = [
            self.restorer.get_watermark_offsets(TopicPartition(topic, p), _KAFKA_TIMEOUT)[1]
            for p in partitions
        ]
        found = self.restorer.offsets_for_times(
            [TopicPartition(topic, p, since - slack) for p in partitions], _KAFKA_TIMEOUT
        )
        out = []
        for tp in found:
            if tp.error is not None:
                raise SinkError(f"could not find where to read {topic} again: {tp.error}")
            offset = tp.offset if tp.offset >= 0 else ends[tp.partition]  # none since then: from the end
            out.append(TopicPartition(topic, tp.partition, offset))
        return out

    def _advance_idle(self, now: float, idle: float) -> None:
        for p, part in self.parts.items():
            if now - part.last_arrival < idle or not part.core.open_bars() or part.next_offset is None:
                continue
            _, high = self.consumer.get_watermark_offsets(TopicPartition(self.ticks_topic, p), cached=True)
            if high > part.next_offset:
                continue  # ticks are waiting: the partition is behind, not idle
            part.core.advance(int(self.clock() * 1000))
            if part.core.closed:
                self._begin()
                part.changed = True
                self._emit(part)

    # Transactions and state

    def _checkpoint(self) -> list[TopicPartition]:
        """Writes the changed state into the open transaction; returns the offsets to commit with it."""
        offsets = []
        state_topic = self.s.candles_state_topic
        for p, part in self.parts.items():
            if not part.changed or part.next_offset is None:
                continue
            prefix = f"{self.ticks_topic}/{p}"
            for token in part.core.dirty:
                state = json.dumps(part.core.token_state(token), separators=(",", ":"))
                self._send(state_topic, state.encode(), f"{prefix}/{token}".encode(), partition=p)
            part.core.dirty.clear()
            part.seq += 1
            snapshot = {**part.core.snapshot(), "offset": part.next_offset, "seq": part.seq}
            self._send(state_topic, json.dumps(snapshot).encode(), prefix.encode(), partition=p)
            offsets.append(TopicPartition(self.ticks_topic, p, part.next_offset, metadata=str(part.seq)))
            part.changed = False
        return offsets

    def _commit(self, rewind: bool = True) -> None:
        """Commits the open cycle. If it cannot commit it is aborted, and with ``rewind`` every partition
        held goes back to its last committed state (without, the caller is giving the partitions up)."""
        if not self._in_txn:
            self._cycle_start = time.monotonic()
            return
        try:
            offsets = self._checkpoint()
            if self.eos:
                self._commit_transaction(offsets)
            else:
                self._commit_at_least_once(offsets)
        except AbortRequired as exc:
            self._rewind(str(exc), rewind)
        else:
            self.counts.commits += 1
            self.counts.add(self.cycle)
            self.status.aborted = None
            self._failing_since = None
        finally:
            self._in_txn = False
            self._cycle_start = time.monotonic()

    def _commit_transaction(self, offsets: list[TopicPartition]) -> None:
        if offsets:
            group = self.consumer.consumer_group_metadata()
            self.txn(  # retried with the same offsets and group metadata, as librdkafka asks
                "send_offsets_to_transaction",
                lambda: self.producer.send_offsets_to_transaction(offsets, group, self.call_timeout),
            )
        self.txn("commit_transaction", lambda: self.producer.commit_transaction(self.call_timeout))

    def _commit_at_least_once(self, offsets: list[TopicPartition]) -> None:
        undelivered = self.producer.flush(_KAFKA_TIMEOUT)
        if undelivered:  # offsets past bars Kafka does not have would lose them: read them again instead
            raise ProcessorFailed(
                f"{undelivered} bars or state records not acknowledged in {_KAFKA_TIMEOUT:.0f} s"
            )
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            err = kafka_error(exc)
            if err is None or err.fatal() or not err.retriable():
                raise ProcessorFailed(f"committing offsets failed: {exc}") from None
            raise AbortRequired("commit", describe(err)) from None

    def _rewind(self, reason: str, rewind: bool) -> None:
        """The open cycle cannot commit: abort it, and go back to the last committed state of every
        partition held. Aborting again and again with nothing committed is bounded like a retry."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since > self.retry_seconds:
            raise ProcessorFailed(
                f"transactions kept aborting for {now - self._failing_since:.0f} s, none committed; "
                f"last: {reason}"
            )
        log.warning("transaction aborted (%s): rewinding to the last committed state", reason)
        self.counts.aborts += 1
        self.status.aborted = reason
        held = [TopicPartition(self.ticks_topic, p) for p in self.parts]
        self._abandon(retry=True)
        for tp in self._restore(held) if rewind and held else ():
            self.consumer.seek(tp)

    def _restore(self, held: list[TopicPartition]) -> list[TopicPartition]:
        """Reads the state of these partitions back; returns where to resume each."""
        wanted = {tp.partition for tp in held}
        deadline = time.monotonic() + _KAFKA_TIMEOUT + self.s.candles_transaction_timeout_ms / 1000
        while True:
            asked = [TopicPartition(self.ticks_topic, p) for p in wanted]
            committed = {tp.partition: tp for tp in self.consumer.committed(asked, _KAFKA_TIMEOUT)}
            states = self._read_state(wanted)
            behind = [
                p
                for p in wanted
                if self.eos and not _visible(states.get(f"{self.ticks_topic}/{p}", {}), committed[p])
            ]
            if not behind:
                break
            if time.monotonic() > deadline:
                raise ConnectorError(
                    f"state topic {self.s.candles_state_topic} does not match the committed offsets of "
                    f"group {self.s.candles_group} for partitions {behind}: was one of them deleted or "
                    "reset? Use a new CANDLES_GROUP and CANDLES_STATE_TOPIC to start over"
                )
            time.sleep(0.2)  # the last transaction's markers are still on their way
        resume = []
        for p in sorted(wanted):
            core = PartitionBars(self.intervals, self.grace_ms)
            snapshot = states.get(f"{self.ticks_topic}/{p}")
            offset = OFFSET_BEGINNING if self.s.candles_from_beginning else OFFSET_END
            if snapshot is not None:
                try:
                    core.restore(snapshot)
                    for key, value in states.items():
                        head, _, token = key.rpartition("/")
                        if head == f"{self.ticks_topic}/{p}":
                            core.restore_token(int(token), value)
                except ValueError as exc:
                    raise ConfigError(
                        f"{exc}: change settings back, or use a new CANDLES_GROUP and CANDLES_STATE_TOPIC"
                    ) from exc
                offset = snapshot["offset"]
            seq = snapshot.get("seq", 0) if snapshot is not None else 0
            self.parts[p] = _Partition(core, None if offset < 0 else offset, time.monotonic(), seq=seq)
            resume.append(TopicPartition(self.ticks_topic, p, offset))
        self._catch_up_gaps()
        self.counts.restores += 1
        log.info("resuming %s", ", ".join(f"{tp.partition}@{tp.offset}" for tp in resume))
        return resume

    def _read_state(self, partitions: set[int]) -> dict[str, Any]:
        """Key → latest committed value, for the state of these ticks partitions."""
        topic = self.s.candles_state_topic
        states: dict[str, Any] = {}
        for msg in self._read_to_end([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]):
            key = (msg.key() or b"").decode()
            value = msg.value()
            if value is None:
                states.pop(key, None)
            else:
                states[key] = json.loads(value)
        return states

    def _read_to_end(self, start: list[TopicPartition]) -> Iterator[Message]:
        """The committed records from these positions to the end of their partitions (one topic)."""
        if not start:
            return
        topic = start[0].topic
        self.restorer.assign(start)
        pending = {tp.partition for tp in start}
        deadline = time.monotonic() + _KAFKA_TIMEOUT
        try:
            while pending:
                if time.monotonic() > deadline:
                    raise SinkError(f"could not read {topic} within {_KAFKA_TIMEOUT:.0f} s")
                for msg in self.restorer.consume(10_000, 0.5):
                    err = msg.error()
                    if err is None:
                        yield msg
                    elif err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                    else:
                        raise SinkError(f"reading {topic}: {err}")
        finally:
            self.restorer.unassign()

    # Rebalance callbacks (run inside consume())

    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        resume = self._restore(assigned) if assigned else []
        consumer.assign(resume)
        if resume:
            self.status.unassigned_since = None

    def _on_revoke(self, consumer: Consumer, revoked: list[TopicPartition]) -> None:
        self._commit(rewind=False)  # hand over everything read so far
        for tp in revoked:
            self.parts.pop(tp.partition, None)
        consumer.unassign()
        self.status.unassigned_since = time.monotonic()

    def _on_lost(self, consumer: Consumer, lost: list[TopicPartition]) -> None:
        log.warning("partitions lost (session timed out): abandoning the open transaction")
        self._abandon(retry=True)
        consumer.unassign()
        self.status.unassigned_since = time.monotonic()


def _visible(snapshot: dict[str, Any], committed: TopicPartition) -> bool:
    """Whether the state read back is that of the group's last committed transaction. The offset alone
    cannot tell: a transaction that only closes idle bars or writes flagged ones again commits the same
    offset, and its state may not be readable yet when another instance takes the partition over. The
    checkpoint's sequence number, in the committed offset's metadata too, can (absent when written by an
    earlier version: the offset decides)."""
    if committed.offset < 0:
        return True
    if snapshot.get("offset") != committed.offset:
        return False
    return not committed.metadata or str(snapshot.get("seq")) == committed.metadata


def _ms(value: Any) -> int:
    """A decoded timestamp-millis (fastavro gives an aware datetime) as epoch milliseconds."""
    return round(float(value.timestamp()) * 1000)


def check_sample(
    topic: str, values: list[bytes], decoder: TickDecoder, registry_url: str | None
) -> list[str]:
    """The errors of the records in ``values`` (the newest of the ticks topic) that do not decode.

    Raises :class:`ConfigError` when they show that the processor would run blind: a Confluent-framed
    record with no SCHEMA_REGISTRY_URL, or not one record that decodes.
    """
    failed: list[tuple[bytes, SerializationError]] = []
    for value in values:
        try:
            decoder.decode(value)
        except SerializationError as exc:
            failed.append((value, exc))
    confluent = [v for v, _ in failed if v[:1] == CONFLUENT_MAGIC and len(v) >= 5]
    if confluent and not registry_url:
        raise ConfigError(
            f"ticks topic {topic} holds the Confluent wire format (schema id "
            f"{int.from_bytes(confluent[0][1:5], 'big')}) and SCHEMA_REGISTRY_URL is not set: set it to the "
            "Schema Registry the connector writes to"
        )
    if values and len(failed) == len(values):
        raise ConfigError(
            f"none of the newest {len(values)} records of {topic} decodes as a tick ({failed[0][1]}): "
            "is KAFKA_TOPIC_TICKS the connector's ticks topic?"
        )
    return [str(exc) for _, exc in failed]


def _metrics_server(settings: CandlesSettings, status: Status) -> ThreadingHTTPServer | None:
    """/metrics and /healthz on a thread of their own (serving), or None with CANDLES_METRICS_PORT=0."""
    host, port = settings.candles_metrics_host, settings.candles_metrics_port
    if not port:
        return None
    metrics = CandleMetrics(status)
    try:
        server = serve_http(metrics.registry, metrics.healthy, host, port)
    except OSError as exc:
        raise ConfigError(f"CANDLES_METRICS_PORT={port}: cannot listen on {host}:{port} ({exc})") from None
    Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def _refusal(processor: CandleProcessor, err: KafkaError | None) -> KafkaAccessError | None:
    """The refusal (credentials, TLS, a missing ACL) an error of the processor's Kafka calls is, if any."""
    if err is None:
        return None
    return refusal_of(
        err,
        processor.client,
        topic=processor.ticks_topic,
        group=processor.s.candles_group,
        transactional_id=processor.transactional_id,
    )


def serve(settings: CandlesSettings) -> int:
    """Run the processor until SIGTERM/SIGINT, then commit what is pending and exit 0; exit 3 when it
    keeps failing (one log line, for the restart policy). A signal while it starts ends it at once; Kafka
    refusing it (credentials, an ACL) before it runs is named (exit 2), after that it exits 3."""
    stop = Event()
    processor = CandleProcessor(settings)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()
        if not processor.started:
            raise Interrupted(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = _metrics_server(settings, processor.status)
    try:
        processor.run(stop)
    except (ProcessorFailed, KafkaException) as exc:
        err = exc.error if isinstance(exc, ProcessorFailed) else kafka_error(exc)
        refusal = _refusal(processor, err)
        if refusal is not None and not processor.started:
            raise refusal from None
        if refusal is not None:
            shown = str(refusal)
        elif isinstance(exc, KafkaException) and err is not None:
            shown = f"Kafka: {describe(err)}"
        else:
            shown = str(exc)
        log.critical("%s; exiting so that the process is restarted", shown)
        return EXIT_FAILED
    except ConnectorError as exc:  # a rebalance's state restore at run time: not a start-up error
        if not processor.started:
            raise
        log.critical("%s; exiting so that the process is restarted", exc)
        return EXIT_FAILED
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    return 0
