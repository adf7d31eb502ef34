"""The order desk: every order update the process receives reaches Kafka once, durably first.

Updates come from every connection (Kite sends a user's updates on each of them) and from
reconciliation. :meth:`OrderDesk.take` (on the listener thread that received one) drops an update
already taken from another connection, by record id, tells the order book and the embedding
callback, and serializes it once; the pipeline stages what it returns and, after the socket read,
hands the batch to :meth:`OrderDesk.commit`, which writes it to the log (one ``fdatasync``) and only then
produces it on that connection's sink. Kafka's acknowledgement marks it done in the log; a failed
delivery is produced again; what a sink leaves unacknowledged when it is replaced goes back to the log and
is produced by the next sink :meth:`attached <OrderDesk.attach>`, as is what an earlier run left.

Every method may be called from any listener thread; one lock guards the outbox, and no Kafka call is
made while holding it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from connector.errors import MalformedFrame, OrderLogError, SerializationError, SinkError
from connector.kite import OrderUpdate
from connector.orders._book import OrderBook
from connector.orders._identity import ORIGIN_RECONCILIATION, OrderRecord, record_id
from connector.orders._log import OrderLog
from connector.orders._rest import FetchedOrder
from connector.serde import DeadLetter
from connector.sink import MAX_RECORD_BYTES, KafkaSink, RecordTooLarge

__all__ = ["OrderDesk", "OrderStats", "Taken"]

log = logging.getLogger("connector.orders")
Taken = OrderRecord | DeadLetter
Headers = list[tuple[str, str | bytes | None]]
_RECENT_IDS = 65_536  # far more updates than Kite sends one user in a day


@dataclass(slots=True)
class OrderStats:
    """Counters of the desk (written under its lock) and of the reconciler (written by its thread only)."""

    taken: int = 0  # distinct updates published (or handed to callbacks)
    duplicates: int = 0  # the same update from a second connection, dropped
    reconciled: int = 0  # taken from Kite's order book, not seen on the socket
    log_errors: int = 0  # log writes that failed (the updates were produced without it)
    left_in_log: int = 0  # unacknowledged at stop, produced again at the next start
    lost: int = 0  # unacknowledged at stop with no log to keep them
    reconcile_errors: int = 0  # reconciler thread
    reconciled_at: float | None = None  # reconciler thread: unix time of the last successful fetch


@dataclass(slots=True)
class _Pending:
    record: OrderRecord
    sink: KafkaSink | None  # the sink it is in flight on; None: waiting for one


class OrderDesk:
    """Order updates of the whole process (see the module's docstring). ``serialize`` is None without
    Kafka: updates then only reach the book and ``notify``."""

    def __init__(
        self,
        serialize: Callable[[OrderUpdate, int], bytes] | None,
        topic: str,
        headers: Headers,
        order_log: OrderLog | None = None,
        book: OrderBook | None = None,
        notify: Callable[[OrderUpdate], None] | None = None,
    ) -> None:
        self.serialize, self.topic, self.headers = serialize, topic, headers
        self.order_log, self.book, self.notify = order_log, book, notify
        self.stats = OrderStats()
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._pending: dict[int, _Pending] = {}
        self._unlogged_seq = 0  # updates the log could not take get seqs counting down from -1
        self._fetched: deque[FetchedOrder | MalformedFrame] = deque()
        for seq, record in order_log.pending() if order_log is not None else ():
            self._pending[seq] = _Pending(record, None)
        if self._pending:
            log.info("%d order updates from an earlier run await Kafka's acknowledgement", len(self._pending))

    # -- intake ------------------------------------------------------------------------------------------
    def take(self, update: OrderUpdate, frame: bytes, received_ms: int, origin: str) -> Taken | None:
        """The record to stage for ``update`` (or the dead letter it became); None for one already taken,
        or when there is no Kafka."""
        rid = record_id(frame)
        with self._lock:
            if rid in self._recent:
                self.stats.duplicates += 1
                return None
            self._recent[rid] = None
            if len(self._recent) > _RECENT_IDS:
                self._recent.popitem(last=False)
            self.stats.taken += 1
        if self.book is not None and origin != ORIGIN_RECONCILIATION:
            self.book.seen(update)  # a reconciled one was recorded by the reconciliation itself
        if self.notify is not None:
            self.notify(update)
        if self.serialize is None:
            return None
        try:
            value = self.serialize(update, received_ms)
        except SerializationError as exc:
            return DeadLetter(frame, str(exc), "serializer")
        if len(value) > MAX_RECORD_BYTES:
            return DeadLetter(
                frame, f"order update of {len(value)} bytes: larger than a Kafka record may be", "sink"
            )
        key = b"" if update.instrument_token is None else str(update.instrument_token).encode()
        return OrderRecord(key, value, received_ms, rid, origin)

    def hand_over(self, orders: Sequence[FetchedOrder], malformed: Sequence[MalformedFrame]) -> None:
        """From the reconciler's thread: orders the socket did not deliver, and those it could not read."""
        self._fetched.extend(orders)
        self._fetched.extend(malformed)

    def reconciled(self) -> list[Taken]:
        """What reconciliation handed over, taken (on the listener thread that publishes it)."""
        out: list[Taken] = []
        fetched = self._fetched
        while fetched:
            item = fetched.popleft()
            if isinstance(item, MalformedFrame):
                out.append(DeadLetter(item.raw, item.reason, "reconciliation"))
                continue
            taken = self.take(item.update, item.frame, time.time_ns() // 1_000_000, ORIGIN_RECONCILIATION)
            with self._lock:
                self.stats.reconciled += 1
            if taken is not None:
                out.append(taken)
        return out

    # -- outbox ------------------------------------------------------------------------------------------
    def commit(self, records: Sequence[OrderRecord], sink: KafkaSink | None) -> None:
        """Durable first (one write for the batch), then produced on ``sink`` (None: by the next attached)."""
        if not records:
            return
        with self._lock:
            seqs = self._append(records)
            for seq, record in zip(seqs, records, strict=True):
                self._pending[seq] = _Pending(record, None)
        if sink is not None:
            self._send(seqs, sink)

    def attach(self, sink: KafkaSink) -> int:
        """A new sink: it produces every update no sink has in flight (an earlier run's, a replaced one's)."""
        with self._lock:
            orphans = [seq for seq, p in self._pending.items() if p.sink is None]
        if orphans:
            log.info("producing %d order updates again (not acknowledged before)", len(orphans))
        self._send(orphans, sink)
        return len(orphans)

    def detach(self, sink: KafkaSink) -> int:
        """``sink`` was closed: what it left unacknowledged waits for the next sink attached."""
        with self._lock:
            left = [p for p in self._pending.values() if p.sink is sink]
            for p in left:
                p.sink = None
        return len(left)

    def close(self) -> None:
        """Every sink is closed: what is still unacknowledged stays in the log for the next start."""
        with self._lock:
            left = len(self._pending)
            if self.order_log is None:
                self.stats.lost += left
            else:
                self.stats.left_in_log += left
        if left and self.order_log is None:
            log.error("%d order updates undelivered and no ORDER_LOG_DIR set: they are lost", left)
        elif left and self.order_log is not None:
            log.warning(
                "%d undelivered order updates kept in %s; produced again at next start",
                left,
                self.order_log.path,
            )
        if self.order_log is not None:
            self.order_log.close()

    def pending(self) -> int:
        return len(self._pending)

    def _append(self, records: Sequence[OrderRecord]) -> list[int]:
        if self.order_log is not None:
            try:
                return self.order_log.append(records)
            except OrderLogError:  # still produced, so not lost unless this process dies before the ack
                log.exception(
                    "the order log could not take %d order updates; producing them anyway", len(records)
                )
                self.stats.log_errors += 1
        first = self._unlogged_seq
        self._unlogged_seq -= len(records)
        return list(range(first - 1, first - 1 - len(records), -1))

    def _send(self, seqs: Sequence[int], sink: KafkaSink) -> None:
        for seq in seqs:
            with self._lock:
                pending = self._pending.get(seq)
                if pending is None:
                    continue
                pending.sink = sink
            record = pending.record
            try:
                sink.produce(
                    self.topic,
                    record.key,
                    record.value,
                    record.timestamp_ms,
                    [*self.headers, *record.headers()],
                    functools.partial(self._done, seq, sink),
                )
            except RecordTooLarge:  # take() keeps updates under the limit: a smaller limit was configured
                log.exception(
                    "order update %s can never be produced; dropped from the order log", record.record_id
                )
                self._settle(seq)
            except SinkError as exc:  # not even queued (stopping, or no room for the delivery timeout)
                log.warning("order update %s stays in the order log: %s", record.record_id, exc)
                with self._lock:
                    pending.sink = None

    def _done(self, seq: int, sink: KafkaSink, acknowledged: bool) -> None:
        """Delivery report of ``seq`` (inside ``sink``'s poll, on its thread)."""
        if acknowledged:
            self._settle(seq)
            return
        with self._lock:
            pending = self._pending.get(seq)
            retry = pending is not None and pending.sink is sink and not sink.stopping
        if retry and pending is not None:
            log.warning("retrying order update %s after delivery failure", pending.record.record_id)
            self._send([seq], sink)

    def _settle(self, seq: int) -> None:
        with self._lock:
            self._pending.pop(seq, None)
            if self.order_log is not None and seq > 0:
                self.order_log.done(seq)
