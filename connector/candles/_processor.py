"""The I/O shell of ``kite-connector candles``: ticks topic in, bars out, exactly once.

Each poll cycle is one Kafka transaction holding the bars and late ticks it produced, the changed state of
the partitions it read (open bars per instrument and the watermark, in a compacted state topic whose
partition p holds the state of ticks partition p), and the consumer offsets (``send_offsets_to_transaction``).
Either all of it becomes visible or none. On (re)assignment a partition's state is read back from the state
topic up to the last committed transaction, checked against the group's committed offset, and reading
resumes at that offset: a crash at any point neither loses nor repeats a bar.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from threading import Event
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
from connector.candles._bars import PartitionBars, parse_intervals
from connector.candles._decode import TickDecoder
from connector.config import CandlesSettings, by_name
from connector.errors import ConfigError, ConnectorError, Interrupted, SerializationError, SinkError
from connector.serde import AvroReader, DeadLetter, check_registry, registry_client
from connector.sink import Access, Cluster, TopicSpec, refusal_of

__all__ = ["CandleProcessor", "serve"]

log = logging.getLogger("connector.candles")


_KAFKA_TIMEOUT = 30.0
_STATS_EVERY = 30.0


@dataclass(slots=True)
class _Partition:
    core: PartitionBars
    next_offset: int | None  # next tick to read; None until known
    last_arrival: float  # monotonic time of the last tick read
    changed: bool = False  # something to checkpoint in this transaction


@dataclass(slots=True)
class _Counts:
    ticks: int = 0
    bars: int = 0
    late: int = 0
    dead_letters: int = 0
    commits: int = 0
    aborts: int = 0
    restores: int = 0


class CandleProcessor:
    """Consume-transform-produce of ticks into bars; ``run`` until ``stop`` is set."""

    def __init__(self, settings: CandlesSettings, clock: Callable[[], float] = time.time) -> None:
        self.v = v = by_name(settings)
        self.client = settings.kafka.client_config()  # every client of the processor connects the same way
        self.intervals = parse_intervals(v["CANDLES_INTERVALS"])
        self.grace_ms: int = v["CANDLES_GRACE_MS"]
        self.ticks_topic: str = v["KAFKA_TOPIC_TICKS"]
        self.topics = {i.label: f"{v['CANDLES_TOPIC_PREFIX']}{i.label}" for i in self.intervals}
        self.eos: bool = v["CANDLES_EXACTLY_ONCE"]
        self.instance: str = v["CANDLES_INSTANCE_ID"] or socket.gethostname()
        self.clock = clock
        self.counts = _Counts()
        self.parts: dict[int, _Partition] = {}
        self._in_txn = False
        self._cycle_start = time.monotonic()
        self.started = False  # the main loop runs (a signal before that ends start-up at once)
        if v["KAFKA_FRAMING"] == "confluent" and not v["SCHEMA_REGISTRY_URL"]:
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
            check_registry(
                self.registry, self.v["SCHEMA_REGISTRY_URL"], self.v["SCHEMA_REGISTRY_TIMEOUT_SECONDS"]
            )
        ticks = meta.topics.get(self.ticks_topic)
        if ticks is None or ticks.error is not None:
            raise ConfigError(
                f"ticks topic {self.ticks_topic!r} does not exist: start `kite-connector run` first "
                "or set KAFKA_TOPIC_TICKS"
            )
        partitions = len(ticks.partitions)
        state_topic = self.v["CANDLES_STATE_TOPIC"]
        state = meta.topics.get(state_topic)
        if state is not None and len(state.partitions) < partitions:
            raise ConfigError(
                f"state topic {state_topic} has {len(state.partitions)} partitions, fewer than the "
                f"{partitions} of {self.ticks_topic}: delete it (bars restart from the committed offsets "
                "with empty state) or name another CANDLES_STATE_TOPIC"
            )
        rf, n = self.v["KAFKA_REPLICATION_FACTOR"], self.v["KAFKA_TOPIC_PARTITIONS"]
        wanted = [TopicSpec(t, n, rf) for t in (*self.topics.values(), self.v["CANDLES_LATE_TOPIC"])]
        wanted.append(TopicSpec(self.v["KAFKA_TOPIC_DEAD_LETTERS"], n, rf))
        wanted.append(
            TopicSpec(state_topic, partitions, rf, config={
                "cleanup.policy": "compact", "segment.bytes": str(64 << 20),
                "min.compaction.lag.ms": "0", "min.cleanable.dirty.ratio": "0.1",
            })
        )  # fmt: skip
        cluster.create(wanted, meta)
        written = [t.name for t in wanted]
        cluster.check(
            Access(write=written, read=[self.ticks_topic, state_topic], groups=[self.v["CANDLES_GROUP"]])
        )
        return partitions

    def _clients(self) -> tuple[Consumer, Producer, Consumer]:
        group = self.v["CANDLES_GROUP"]
        consumer = Consumer({
            **self.client, "group.id": group, "group.instance.id": self.instance,
            "isolation.level": "read_committed", "enable.auto.commit": False,
            "auto.offset.reset": "earliest" if self.v["CANDLES_FROM_BEGINNING"] else "latest",
            "session.timeout.ms": self.v["CANDLES_SESSION_TIMEOUT_MS"],
            "enable.partition.eof": False, "log_level": 4,
        })  # fmt: skip
        producer_config: dict[str, Any] = {
            **self.client, "enable.idempotence": True, "linger.ms": 5,
            "compression.type": "lz4", "log_level": 4,
        }  # fmt: skip
        if self.eos:
            producer_config["transactional.id"] = f"{group}-{self.instance}"
            producer_config["transaction.timeout.ms"] = self.v["CANDLES_TRANSACTION_TIMEOUT_MS"]
        producer = Producer(producer_config)
        restorer = Consumer({
            **self.client, "group.id": f"{group}.restore", "enable.auto.commit": False,
            "isolation.level": "read_committed", "enable.partition.eof": True, "log_level": 4,
        })  # fmt: skip
        return consumer, producer, restorer

    # Main loop

    def run(self, stop: Event) -> None:
        partitions = self._ensure_topics()
        log.info(
            "candles: %s (%d partitions) -> %s; instance %s, exactly-once %s",
            self.ticks_topic, partitions, ", ".join(self.topics.values()), self.instance, self.eos,
        )  # fmt: skip
        framing = self.v["KAFKA_FRAMING"]
        url = self.v["SCHEMA_REGISTRY_URL"] or ""
        self.bar_writers = {
            label: serializer("candle", t, framing, self.registry, url) for label, t in self.topics.items()
        }
        self.dlq_writer = serializer(
            "dead_letter", self.v["KAFKA_TOPIC_DEAD_LETTERS"], framing, self.registry, url
        )
        self.consumer, self.producer, self.restorer = self._clients()
        if self.eos:
            self.producer.init_transactions(_KAFKA_TIMEOUT)
        self.consumer.subscribe(
            [self.ticks_topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        interval = self.v["CANDLES_COMMIT_INTERVAL_MS"] / 1000
        idle = self.v["CANDLES_IDLE_SECONDS"]
        next_stats = time.monotonic() + _STATS_EVERY
        self.started = True
        try:
            while not stop.is_set():
                batch = self.consumer.consume(10_000, 0.1)
                if batch:
                    self._process(batch)
                now = time.monotonic()
                if idle:
                    self._advance_idle(now, idle)
                if now - self._cycle_start >= interval:
                    self._commit()
                if now >= next_stats:
                    next_stats = now + _STATS_EVERY
                    self._log_stats()
            self._commit()
        except BaseException:
            self._abandon()  # never commit a cycle that did not finish
            raise
        finally:
            self.consumer.close()  # revokes: the callback commits what is pending
            self.restorer.close()
            self.producer.flush(_KAFKA_TIMEOUT)
            self._log_stats()

    def _log_stats(self) -> None:
        c = self.counts
        log.info(
            "candles: %d ticks, %d bars, %d late ticks, %d dead letters, %d commits, %d aborts, %d open bars",
            c.ticks, c.bars, c.late, c.dead_letters, c.commits, c.aborts,
            sum(p.core.open_bars() for p in self.parts.values()),
            extra={"fields": {"ticks": c.ticks, "bars": c.bars, "late_ticks": c.late,
                              "dead_letters": c.dead_letters, "commits": c.commits, "aborts": c.aborts}},
        )  # fmt: skip

    def _abandon(self) -> None:
        if self._in_txn and self.eos:
            try:
                self.producer.abort_transaction(_KAFKA_TIMEOUT)
            except KafkaException as exc:
                log.warning("could not abort the open transaction (%s): it aborts when it times out", exc)
        self._in_txn = False
        self.parts.clear()

    def _send(self, topic: str, value: bytes, key: bytes | None, **kwargs: Any) -> None:
        """produce(), waiting while the local queue is full (bounded by the producer's delivery timeout)."""
        while True:
            try:
                self.producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:
                self.producer.poll(0.05)

    def _begin(self) -> None:
        if not self._in_txn:
            if self.eos:
                self.producer.begin_transaction()
            self._in_txn = True
            self._cycle_start = time.monotonic()

    def _process(self, batch: list[Message]) -> None:
        self._begin()
        parts, decode = self.parts, self.decoder.decode
        now = time.monotonic()
        counts = self.counts
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise SinkError(f"Kafka consumer: {err}")
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
                self._dead_letter(msg, value, exc)
                continue
            late = part.core.add(*tick)
            if late:
                counts.late += 1
                self._send(self.v["CANDLES_LATE_TOPIC"], value, msg.key(), timestamp=tick.time_ms, headers=[
                    ("candles.late_for", ",".join(late)),
                    ("candles.source", f"{self.ticks_topic}/{msg.partition()}/{offset}"),
                ])  # fmt: skip
            if part.core.closed:
                self._emit(part)

    def _dead_letter(self, msg: Message, value: bytes, exc: Exception) -> None:
        self.counts.dead_letters += 1
        where = f"{self.ticks_topic}/{msg.partition()}/{msg.offset()}"
        if self.counts.dead_letters <= 10 or self.counts.dead_letters % 1000 == 0:
            log.warning(
                "undecodable tick at %s (%s): sent to %s", where, exc, self.v["KAFKA_TOPIC_DEAD_LETTERS"]
            )
        letter = DeadLetter(value, f"{where}: {exc}", "candles", msg.offset())
        self._send(
            self.v["KAFKA_TOPIC_DEAD_LETTERS"], self.dlq_writer(letter, int(self.clock() * 1000)), b"candles",
            headers=self.dlq_writer.headers,
        )  # fmt: skip

    def _emit(self, part: _Partition) -> None:
        now_ms = int(self.clock() * 1000)
        for candle in part.core.closed:
            writer = self.bar_writers[candle.interval]
            self._send(
                self.topics[candle.interval], writer(candle, now_ms), str(candle.instrument_token).encode(),
                timestamp=candle.start, headers=writer.headers,
            )  # fmt: skip
        self.counts.bars += len(part.core.closed)
        part.core.closed.clear()

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
        state_topic = self.v["CANDLES_STATE_TOPIC"]
        for p, part in self.parts.items():
            if not part.changed or part.next_offset is None:
                continue
            prefix = f"{self.ticks_topic}/{p}"
            for token in part.core.dirty:
                state = json.dumps(part.core.token_state(token), separators=(",", ":"))
                self._send(state_topic, state.encode(), f"{prefix}/{token}".encode(), partition=p)
            part.core.dirty.clear()
            snapshot = {**part.core.snapshot(), "offset": part.next_offset}
            self._send(state_topic, json.dumps(snapshot).encode(), prefix.encode(), partition=p)
            offsets.append(TopicPartition(self.ticks_topic, p, part.next_offset))
            part.changed = False
        return offsets

    def _commit(self, rewind: bool = True) -> None:
        """Commits the open cycle. If that fails it is aborted, and with ``rewind`` every partition held
        goes back to its last committed state (without, the caller is giving the partitions up)."""
        if not self._in_txn:
            self._cycle_start = time.monotonic()
            return
        offsets = self._checkpoint()
        try:
            if self.eos:
                if offsets:
                    self.producer.send_offsets_to_transaction(
                        offsets, self.consumer.consumer_group_metadata(), _KAFKA_TIMEOUT
                    )
                self.producer.commit_transaction(_KAFKA_TIMEOUT)
            else:
                self.producer.flush(_KAFKA_TIMEOUT)
                if offsets:
                    self.consumer.commit(offsets=offsets, asynchronous=False)
            self.counts.commits += 1
        except KafkaException as exc:
            self._failed(exc, rewind)
        finally:
            self._in_txn = False
            self._cycle_start = time.monotonic()

    def _failed(self, exc: KafkaException, rewind: bool) -> None:
        """A commit failed: abort, and go back to the last committed state of every partition we hold."""
        err: KafkaError = exc.args[0]
        if err.fatal() or not (err.txn_requires_abort() or err.retriable()):
            raise SinkError(f"Kafka transaction failed for good ({err}): restarting picks up where the "
                            "last committed transaction left off") from exc  # fmt: skip
        log.warning("transaction aborted (%s): rewinding to the last committed state", err)
        self.counts.aborts += 1
        if self.eos:
            self.producer.abort_transaction(_KAFKA_TIMEOUT)
        held = [TopicPartition(self.ticks_topic, p) for p in self.parts]
        self.parts.clear()
        for tp in self._restore(held) if rewind and held else ():
            self.consumer.seek(tp)

    def _restore(self, held: list[TopicPartition]) -> list[TopicPartition]:
        """Reads the state of these partitions back; returns where to resume each."""
        wanted = {tp.partition for tp in held}
        deadline = time.monotonic() + _KAFKA_TIMEOUT + self.v["CANDLES_TRANSACTION_TIMEOUT_MS"] / 1000
        while True:
            asked = [TopicPartition(self.ticks_topic, p) for p in wanted]
            committed = {tp.partition: tp.offset for tp in self.consumer.committed(asked, _KAFKA_TIMEOUT)}
            states = self._read_state(wanted)
            # The state of the last committed transaction is visible once its offset matches the group's.
            behind = [
                p
                for p in wanted
                if self.eos
                and committed[p] >= 0
                and states.get(f"{self.ticks_topic}/{p}", {}).get("offset") != committed[p]
            ]
            if not behind:
                break
            if time.monotonic() > deadline:
                raise ConnectorError(
                    f"state topic {self.v['CANDLES_STATE_TOPIC']} does not match the committed offsets of "
                    f"group {self.v['CANDLES_GROUP']} for partitions {behind}: was one of them deleted or "
                    "reset? Use a new CANDLES_GROUP and CANDLES_STATE_TOPIC to start over"
                )
            time.sleep(0.2)  # the last transaction's markers are still on their way
        resume = []
        for p in sorted(wanted):
            core = PartitionBars(self.intervals, self.grace_ms)
            snapshot = states.get(f"{self.ticks_topic}/{p}")
            offset = OFFSET_BEGINNING if self.v["CANDLES_FROM_BEGINNING"] else OFFSET_END
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
            self.parts[p] = _Partition(core, None if offset < 0 else offset, time.monotonic())
            resume.append(TopicPartition(self.ticks_topic, p, offset))
        self.counts.restores += 1
        log.info("resuming %s", ", ".join(f"{tp.partition}@{tp.offset}" for tp in resume))
        return resume

    def _read_state(self, partitions: set[int]) -> dict[str, Any]:
        """Key → latest committed value, for the state of these ticks partitions."""
        topic = self.v["CANDLES_STATE_TOPIC"]
        self.restorer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        states: dict[str, Any] = {}
        pending = set(partitions)
        deadline = time.monotonic() + _KAFKA_TIMEOUT
        try:
            while pending:
                if time.monotonic() > deadline:
                    raise SinkError(f"could not read state topic {topic} within {_KAFKA_TIMEOUT:.0f} s")
                for msg in self.restorer.consume(10_000, 0.5):
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            pending.discard(msg.partition())
                            continue
                        raise SinkError(f"reading state topic {topic}: {err}")
                    key = (msg.key() or b"").decode()
                    value = msg.value()
                    if value is None:
                        states.pop(key, None)
                    else:
                        states[key] = json.loads(value)
        finally:
            self.restorer.unassign()
        return states

    # Rebalance callbacks (run inside consume())

    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        resume = self._restore(assigned) if assigned else []
        consumer.assign(resume)

    def _on_revoke(self, consumer: Consumer, revoked: list[TopicPartition]) -> None:
        self._commit(rewind=False)  # hand over everything read so far
        for tp in revoked:
            self.parts.pop(tp.partition, None)
        consumer.unassign()

    def _on_lost(self, consumer: Consumer, lost: list[TopicPartition]) -> None:
        log.warning("partitions lost (session timed out): abandoning the open transaction")
        self._abandon()
        consumer.unassign()


def serve(settings: CandlesSettings) -> int:
    """Run the processor until SIGTERM/SIGINT, then commit what is pending and exit 0. A signal while it
    starts ends it at once; a refusal of its first transactional call is named (exit 2)."""
    stop = Event()
    processor = CandleProcessor(settings)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()
        if not processor.started:
            raise Interrupted(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        processor.run(stop)
    except KafkaException as exc:  # from the first call that uses the group or the transactional id
        refusal = refusal_of(
            exc,
            processor.client,
            topic=settings.kafka_topic_ticks,
            group=settings.candles_group,
            transactional_id=f"{settings.candles_group}-{processor.instance}",
        )
        if refusal is None:
            raise
        raise refusal from None
    return 0
