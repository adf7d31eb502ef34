"""One shard's Kafka side in an HA set: a buffer while standby, a transactional producer while active.

The shard's pipeline hands records over on its listener threads (:meth:`HaSink.produce_ticks` and the
rest), which only append to the buffer under a lock: a listener never waits for Kafka. The sink's own
thread (:meth:`HaSink.run`, supervised) does every Kafka call. While standby it does nothing; the producer
exists (its connections warm) but has no producer id, because ``init_transactions`` with the set's
transactional id would fence the active. At takeover the coordinator asks it to :meth:`prepare`
(``init_transactions``: from then on the old active can make nothing visible) and then to
:meth:`activate` with what Kafka already holds; what it lacks is produced first, flagged, and then the
live records. Every ``commit_interval`` the open transaction commits and its records leave the buffer;
an aborted one is produced again from the buffer. Fenced by a newer active, the sink stops producing and
says so through :meth:`failure`, for the process to exit and come back as a standby.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from connector.errors import SinkError
from connector.ha._buffer import Entry, Headers, Ident, RecordBuffer
from connector.ha._ident import INSTANCE_HEADER, REPLAYED, tick_ident
from connector.ha._stats import HaStats
from connector.logs import sample
from connector.sink import OnDone, SinkConfig, note_refusal, tick_id_header
from connector.stats import ShardStats

__all__ = ["TRANSACTION_TIMEOUT_MS", "HaSink", "HaSinkConfig", "Role"]

log = sample(logging.getLogger("connector.ha"))
# An open transaction of an active that died holds back read_committed consumers until a new active's
# init_transactions aborts it (at takeover) or until this timeout (no standby). Short, because an aborted
# transaction costs nothing but producing its records again from the buffer.
TRANSACTION_TIMEOUT_MS = 10_000
CALL_TIMEOUT = 5.0  # one attempt of init/commit/abort; a retriable timeout is retried
INIT_BUDGET = 60.0  # seconds of retriable init_transactions failures before the sink fails (exit 3)
_BATCH = 1000  # entries taken from the buffer per lock
# Delivery errors that say Kafka will never take this record (a delivery report's KafkaError never says
# retriable: the code decides). Anything else, a timeout included, is produced again after the abort.
_REFUSED = frozenset(
    (
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_TIMESTAMP,
    )
)


class Role(enum.Enum):
    STANDBY = "standby"
    PREPARING = "preparing"  # init_transactions asked for
    READY = "ready"  # has its producer id: the old active is fenced
    ACTIVE = "active"
    FENCED = "fenced"
    CLOSED = "closed"


class _Txn(enum.Enum):
    NONE = 0
    OPEN = 1
    COMMITTING = 2  # a commit timed out: it is retried before anything is produced
    ABORTING = 3  # an abort timed out: likewise


@dataclass(frozen=True, slots=True)
class HaSinkConfig:
    sink: SinkConfig  # topics, in-flight bound, producer properties
    transactional_id: str
    instance: str  # HA_INSTANCE_ID, written as the kite.instance header
    commit_interval: float  # seconds
    buffer_seconds: float
    buffer_max_bytes: int

    def producer(self) -> dict[str, Any]:
        """The shard producer's properties, made transactional. Records stay in the buffer until a
        commit covers them, so a record's own delivery timeout only has to fit in a transaction."""
        return {
            **self.sink.producer,
            "transactional.id": self.transactional_id,
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            "message.timeout.ms": TRANSACTION_TIMEOUT_MS,
        }


class HaSink:
    """See the module's docstring. Listener threads call the ``produce*`` methods; the coordinator calls
    :meth:`prepare` and :meth:`activate`; everything else runs on the sink's thread (:meth:`run`)."""

    def __init__(
        self,
        shard: int,
        config: HaSinkConfig,
        stats: ShardStats,
        ha: HaStats,
        headers: dict[str, Headers | None],
        dead_letter_ident: Callable[[bytes], Ident | None],
        observe_latency: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shard, self.config, self.stats, self.ha = shard, config, stats, ha
        self._headers = headers
        self._dead_letter_ident = dead_letter_ident
        self._observe = observe_latency
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.buffer = RecordBuffer(config.buffer_seconds, config.buffer_max_bytes)
        self._init_failing_since: float | None = None  # first retriable init_transactions failure
        self._instance = (INSTANCE_HEADER, config.instance.encode())
        self._topics = config.sink.topics
        self.role = Role.STANDBY
        self.prepared = threading.Event()
        self._txn = _Txn.NONE
        self._txn_started = 0.0
        self._expired_at = 0.0
        self._replaying = threading.local()  # .orders: this thread hands over the standby's order updates
        self.stopping = False
        self._failure: str | None = None
        # Kafka refused a record of the open transaction for good. A whole batch fails with it, so which
        # one is not known: the aborted transaction's records go in halving transactions until it is alone.
        self._refused, self._refusal = False, KafkaError(KafkaError.NO_ERROR)
        self._txn_size = 0  # records produced into the open transaction
        self._suspects = 0  # waiting records, from the front, still produced in probing transactions
        self._culprit = 0  # the first this many suspects hold a refused record (0: the rest is tried whole)
        self._client = config.producer()
        self.producer = Producer(
            {**self._client, "error_cb": self._on_error}, logger=sample(logging.getLogger("librdkafka"))
        )

    def failure(self) -> str | None:
        """Why this sink no longer produces (fenced, or a transaction failed for good), or None."""
        return self._failure

    # -- the pipeline's side (listener threads, and the order desk) ------------------------------------
    def ready(self) -> bool:
        return True  # nothing to wait for: a standby has no producer id, an active got one at takeover

    def takes_orders(self) -> bool:
        """Whether order updates may be produced here now (else they wait in the order log)."""
        return self.role is Role.ACTIVE

    def saturated(self) -> bool:
        """Taking over or active, records stay until committed: reading stops while the bound is reached."""
        return self.role is not Role.STANDBY and self.buffer.bytes > self.config.buffer_max_bytes

    def service(self) -> float | None:
        return None  # acknowledgements are the sink's thread's business

    def stop(self) -> None:
        self.stopping = True

    def produce_ticks(self, batch: Sequence[tuple[bytes, bytes, int]], received: float) -> None:
        self.produce_tick_records([(key, value, ts, None) for key, value, ts in batch], received)

    def produce_named_ticks(self, batch: Sequence[tuple[bytes, bytes, int, int]], received: float) -> None:
        self.produce_tick_records(
            [(key, value, ts, [tick_id_header(i)]) for key, value, ts, i in batch], received
        )

    def produce_tick_records(
        self, batch: Sequence[tuple[bytes, bytes, int, Headers | None]], received: float
    ) -> None:
        """(key, value, timestamp, headers) of each tick of one message; the ``kite.tick_id`` header, where
        there is one, names the tick at takeover."""
        topic, kind = self._topics.ticks, self._headers.get("tick") or []
        now = self._clock()
        probe: float | None = received
        entries = []
        for key, value, timestamp_ms, extra in batch:
            headers: Headers = [*kind, *(extra or ()), self._instance]
            ident = tick_ident(topic, key, extra)
            entries.append(Entry(topic, key, value, timestamp_ms, headers, ident, now, None, probe))
            probe = None
        self._append(entries, now)

    def produce_dead_letter(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        ident = self._dead_letter_ident(value)
        self._append_one(self._topics.dead_letters, key, value, timestamp_ms, "dead_letter", ident)

    def produce_gap(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        """A standby's silence says nothing of what the active received: only an active reports gaps."""
        if self.role is Role.ACTIVE:
            self._append_one(self._topics.gaps, key, value, timestamp_ms, "gap", None)

    def produce(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        timestamp_ms: int,
        headers: Headers | None,
        on_done: OnDone,
    ) -> None:
        """An order update from the desk: told (True) once a commit covers it."""
        if self.role is not Role.ACTIVE:
            raise SinkError(f"shard {self.shard} is not the active's: the order update stays in the log")
        all_headers: Headers = [*(headers or ()), self._instance]
        if getattr(self._replaying, "orders", False):
            all_headers.append(REPLAYED)
        now = self._clock()
        self._append([Entry(topic, key, value, timestamp_ms, all_headers, None, now, on_done)], now)

    def _append_one(
        self, topic: str, key: bytes, value: bytes, timestamp_ms: int, kind: str, ident: Ident | None
    ) -> None:
        now = self._clock()
        headers: Headers = [*(self._headers.get(kind) or ()), self._instance]
        self._append([Entry(topic, key, value, timestamp_ms, headers, ident, now)], now)

    def _append(self, entries: list[Entry], now: float) -> None:
        if self.role in (Role.FENCED, Role.CLOSED):
            return  # this process is on its way out: another instance produces
        with self._lock:
            for entry in entries:
                self.buffer.append(entry)
            # read under the lock activate() changes it under: a standby's expiry never runs after it
            role = self.role
            if role is Role.STANDBY and now - self._expired_at >= 0.1:
                self._expired_at = now
                self.buffer.expire(now)
        if role is Role.ACTIVE:
            self._wake.set()

    # -- takeover (the coordinator's thread) -----------------------------------------------------------
    def prepare(self) -> None:
        """Get a producer id (on the sink's thread): :attr:`prepared` is set once the old active is fenced."""
        if self.role is Role.STANDBY:
            self.role = Role.PREPARING
            self._wake.set()

    def oldest_timestamp_ms(self) -> int | None:
        with self._lock:
            return self.buffer.oldest_timestamp_ms()

    def activate(self, present: Collection[Ident], flag: bool = True) -> int:
        """Produce what Kafka lacks of the buffer (flagged, unless ``flag`` is False: nothing was written in
        the window, so nothing can be a repeat), then live records; returns how many come from the buffer."""
        with self._lock:
            before = len(self.buffer)
            replay = self.buffer.keep_missing(present, REPLAYED if flag else None)
            self.role = Role.ACTIVE
        self.ha.present += before - replay
        self.ha.replayed += replay
        self._wake.set()
        return replay

    @contextlib.contextmanager
    def replaying_orders(self) -> Iterator[None]:
        """Order updates this thread produces within (the desk's hand-over at takeover) are flagged."""
        self._replaying.orders = True
        try:
            yield
        finally:
            self._replaying.orders = False

    # -- the sink's thread -----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """The sink's thread: idle while standby, ``init_transactions`` when asked, then producing."""
        while not stop.is_set():
            role = self.role
            if role is Role.PREPARING:
                self._init_transactions()
            elif role is Role.ACTIVE:
                self._serve()
                self._wake.wait(self._next_wait())
                self._wake.clear()
            else:  # its error callbacks and logs are served as an active's are: a standby is watched too
                self._poll()
                self._wake.wait(0.1)
                self._wake.clear()

    def _init_transactions(self) -> None:
        started = time.monotonic()
        try:
            self.producer.init_transactions(CALL_TIMEOUT)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            note_refusal(self.stats, error, self._client, self._topics.ticks)
            failing = time.monotonic() - (self._init_failing_since or started)
            if error.fatal() or not error.retriable():
                self._fail(f"init_transactions failed: {error.str()}")
            elif failing > INIT_BUDGET:  # holding the lease, a member that cannot produce must give it up
                self._fail(
                    f"init_transactions kept failing for {failing:.0f} s ({error.str()}): is the brokers' "
                    "transaction coordinator up (the __transaction_state topic's replicas)?"
                )
            else:
                self._init_failing_since = self._init_failing_since or started
                log.warning("shard %d: init_transactions: %s; trying again", self.shard, error.str())
                self._wake.wait(0.5)
            return
        self._init_failing_since = None
        log.info("shard %d: producer id in %.0f ms", self.shard, (time.monotonic() - started) * 1000)
        self.role = Role.READY
        self.prepared.set()

    def _next_wait(self) -> float:
        if self._txn is _Txn.OPEN:
            return max(0.0, self._txn_started + self.config.commit_interval - self._clock())
        return 0.005 if self.stats.in_flight else 0.05

    def _poll(self) -> None:
        """Delivery reports and error callbacks; an error poll() raises (a fatal one) is handled as any."""
        try:
            self.producer.poll(0)
        except KafkaException as exc:
            self._kafka_error(exc, "poll")

    def _serve(self) -> None:
        """One round: delivery reports, a retried commit or abort, the buffer produced, a commit when due."""
        self._poll()
        if self.role is not Role.ACTIVE:
            return
        if self._txn is _Txn.COMMITTING:
            self._commit()
        elif self._txn is _Txn.ABORTING:
            self._abort()
        if self._txn in (_Txn.NONE, _Txn.OPEN):
            self._pump()
        due = self._clock() - self._txn_started >= self.config.commit_interval
        if self._txn is _Txn.OPEN and (due or self._probe_full()):
            self._commit()

    def _probe_size(self) -> int:
        """Records the open transaction may hold while probing for a refused record (0: not probing)."""
        return (self._culprit + 1) // 2 if self._culprit else self._suspects

    def _probe_full(self) -> bool:
        return self._suspects > 0 and self._txn_size >= self._probe_size()

    def _pump(self) -> None:
        """Produce waiting entries into the open transaction (one is begun first), up to the bound."""
        stats, bound, producer = self.stats, self.config.sink.max_in_flight, self.producer
        while self.role is Role.ACTIVE and stats.in_flight < bound:
            limit = min(_BATCH, bound - stats.in_flight)
            if self._suspects:
                limit = min(limit, self._probe_size() - self._txn_size)
            with self._lock:
                batch = self.buffer.take(max(0, limit))
            if not batch:
                return
            done, failed = 0, None
            try:
                if self._txn is _Txn.NONE:
                    producer.begin_transaction()
                    self._txn, self._txn_started = _Txn.OPEN, self._clock()
                for e in batch:
                    producer.produce(
                        e.topic, e.value, e.key, -1, self._delivered, None, e.timestamp_ms, e.headers
                    )
                    stats.produced[e.topic] += 1
                    done += 1
            except BufferError:  # librdkafka's queue is full: the rest waits for the next round
                producer.poll(0.01)
            except KafkaException as exc:
                failed = exc
            stats.in_flight += done
            self._txn_size += done
            if done < len(batch):
                with self._lock:
                    self.buffer.unsend(len(batch) - done)
            if failed is not None and failed.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                stats.failed[batch[done].topic] += 1
                self._drop(batch[done], failed.args[0])  # larger than the producer takes: it never will
                continue
            if failed is not None:
                self._kafka_error(failed, "produce")  # may abort: the buffer rewinds after the unsend
            if done < len(batch):
                return

    def _drop(self, entry: Entry, error: KafkaError) -> None:
        """A record Kafka refuses for good leaves the buffer (its failures are counted already). An order
        update is not acknowledged: it stays in the order log, produced again at the next start."""
        with self._lock:
            self.buffer.drop_waiting(lambda e: e is entry)
        self.ha.refused += 1
        log.error(
            "shard %d: a %d byte record for %s refused by Kafka for good (%s): %s",
            self.shard,
            len(entry.value),
            entry.topic,
            error.str(),
            "it stays in the order log" if entry.on_done is not None else "dropped",
        )

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        stats = self.stats
        stats.in_flight -= 1
        topic = msg.topic() or "?"
        if err is None:
            stats.delivered[topic] += 1
            return
        if err.code() in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
            return  # an abort took it back: it is produced again from the buffer
        stats.failed[topic] += 1  # the commit then fails: the transaction is aborted and produced again
        note_refusal(stats, err, self._client, topic)  # counted by kind; a refusal shows in /healthz
        if err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED):  # never fatal() here
            self._fenced(err)
        elif err.code() in _REFUSED:  # produced again it would fail again, and abort every transaction
            self._refused, self._refusal = True, err

    def _commit(self) -> None:
        try:
            self.producer.commit_transaction(CALL_TIMEOUT)
        except KafkaException as exc:
            self._kafka_error(exc, "commit")
            return
        self._txn, self._txn_size = _Txn.NONE, 0
        with self._lock:
            done = self.buffer.commit()
        self.ha.commits += 1
        if self._suspects:  # clean: a refused record is among the suspects after them
            self._suspects = max(0, self._suspects - len(done))
            self._culprit = max(0, self._culprit - len(done))
        now = time.perf_counter()
        observe = self._observe
        for entry in done:
            if entry.on_done is not None:
                entry.on_done(True)
            if entry.received is not None and observe is not None:
                observe(now - entry.received)

    def _abort(self) -> None:
        try:
            self.producer.abort_transaction(CALL_TIMEOUT)
        except KafkaException as exc:
            self._kafka_error(exc, "abort")
            return
        self._txn, self._txn_size = _Txn.NONE, 0
        with self._lock:
            again = self.buffer.rewind()
            first = self.buffer.take(1)
            self.buffer.unsend(len(first))
        self.ha.aborts += 1
        log.warning("shard %d: transaction aborted; its %d records are produced again", self.shard, again)
        if self._refused and again == 1 and first:  # alone in its transaction: Kafka refuses this one
            self._drop(first[0], self._refusal)
            self._suspects, self._culprit = max(0, self._suspects - 1), 0
        elif self._refused:
            self._suspects, self._culprit = max(self._suspects, again), again
        self._refused = False

    def _kafka_error(self, exc: KafkaException, during: str) -> None:
        error: KafkaError = exc.args[0]
        note_refusal(self.stats, error, self._client, self._topics.ticks)  # counted by kind, as a delivery's
        if error.fatal() or error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED):
            self._fenced(error)
        elif error.txn_requires_abort() and during != "abort":
            log.warning("shard %d: %s failed (%s): aborting the transaction", self.shard, during, error.str())
            self._txn = _Txn.ABORTING
            self._abort()
        elif error.retriable() or error.txn_requires_abort():
            log.warning("shard %d: %s: %s; trying again", self.shard, during, error.str())
            if during in ("commit", "abort"):
                self._txn = _Txn.COMMITTING if during == "commit" else _Txn.ABORTING
        else:
            self._fail(f"Kafka transaction {during} failed: {error.str()}")

    def _on_error(self, error: KafkaError) -> None:
        note_refusal(self.stats, error, self._client, self._topics.ticks)
        if error.fatal():
            self._fenced(error)

    def _fenced(self, error: KafkaError) -> None:
        if self.role is Role.FENCED:
            return
        self.role = Role.FENCED
        self.ha.fenced += 1
        self._failure = f"shard {self.shard}: fenced by another instance of the HA set ({error.str()})"
        log.error("%s: this instance stops producing and exits, to come back as a standby", self._failure)

    def _fail(self, why: str) -> None:
        self.role = Role.FENCED
        self._failure = f"shard {self.shard}: {why}"
        log.error("%s", self._failure)

    # -- the end ---------------------------------------------------------------------------------------
    def close(self, timeout: float) -> int:
        """After the sink's thread stopped: an active produces what waits and commits, within ``timeout``;
        returns the records left uncommitted."""
        deadline = time.monotonic() + timeout
        if self.role is Role.ACTIVE:
            while (
                self.role is Role.ACTIVE
                and time.monotonic() < deadline
                and (self.buffer.waiting() or self._txn is not _Txn.NONE)
            ):
                self._serve()
                if self._txn is _Txn.OPEN and not self.buffer.waiting():
                    self._commit()
                else:
                    self.producer.poll(0.01)
        left = len(self.buffer) if self.role is Role.ACTIVE else 0
        self.role = Role.CLOSED
        return left
