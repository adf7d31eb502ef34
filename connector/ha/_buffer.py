"""The HA buffer: the records one shard would produce, kept in arrival order. Sans-I/O.

A standby appends every record it would have produced and forgets what is older than the window or
beyond the byte bound: at takeover, :meth:`RecordBuffer.keep_missing` leaves only what Kafka lacks, and
that is produced first. An active appends too; records are handed to the open transaction from the
buffer (:meth:`RecordBuffer.take`) and leave it only once a commit covers them (:meth:`RecordBuffer.commit`),
so the records of an aborted transaction are produced again from the same place
(:meth:`RecordBuffer.rewind`) and a record in Kafka is never one that was lost on the way.

Not thread-safe: the shard's HA sink holds a lock around every call.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

__all__ = ["ENTRY_OVERHEAD", "Entry", "Ident", "RecordBuffer"]

Headers = list[tuple[str, str | bytes | None]]
# What names a record in Kafka across instances: (topic, key, id). For a tick the id is its tick id (the
# same bytes on every instance that received it); None for records not checked against Kafka.
Ident = tuple[str, bytes, bytes]
ENTRY_OVERHEAD = 200  # bytes an entry costs beyond its key and value (objects, headers), for the bound


@dataclass(slots=True)
class Entry:
    """One record as it will be produced, with what the buffer and the commit need to know of it."""

    topic: str
    key: bytes
    value: bytes
    timestamp_ms: int
    headers: Headers | None
    ident: Ident | None  # checked against Kafka's tail at takeover; None: always produced
    at: float  # when it was appended (the buffer's clock)
    on_done: Callable[[bool], None] | None = None  # order updates: told once a commit covers it
    received: float | None = None  # perf_counter() at receipt, on the first record of a message

    @property
    def size(self) -> int:
        return len(self.key) + len(self.value) + ENTRY_OVERHEAD


class RecordBuffer:
    """Entries in arrival order; ``[head, sent)`` are in the open transaction, ``[sent, end)`` wait."""

    def __init__(self, window_seconds: float, max_bytes: int) -> None:
        self.window, self.max_bytes = window_seconds, max_bytes
        self._items: list[Entry] = []
        self._head = 0  # first entry kept
        self._sent = 0  # first entry not yet handed to the producer
        self.bytes = 0  # of the entries kept
        self.expired = 0  # entries forgotten by a standby (older than the window, or over the bound)

    def __len__(self) -> int:
        return len(self._items) - self._head

    def append(self, entry: Entry) -> None:
        self._items.append(entry)
        self.bytes += entry.size

    # -- standby ---------------------------------------------------------------------------------------
    def expire(self, now: float) -> int:
        """Forget entries older than the window, and the oldest while over the byte bound; how many.

        Only a standby calls this: nothing of it has been handed to a producer."""
        items, head, cutoff = self._items, self._head, now - self.window
        start = head
        while head < len(items) and (items[head].at < cutoff or self.bytes > self.max_bytes):
            self.bytes -= items[head].size
            head += 1
        self._head = self._sent = head
        self._compact()
        self.expired += head - start
        return head - start

    def oldest_timestamp_ms(self) -> int | None:
        """The smallest Kafka timestamp of the entries checked against Kafka (None: there are none)."""
        stamps = [e.timestamp_ms for e in self._items[self._head :] if e.ident is not None]
        return min(stamps) if stamps else None

    def keep_missing(self, present: Collection[Ident], mark: tuple[str, bytes] | None) -> int:
        """Takeover: drop the entries Kafka already holds, add header ``mark`` (if any) to the rest; how
        many remain to be produced."""
        kept = [e for e in self._items[self._head :] if e.ident is None or e.ident not in present]
        if mark is not None:
            for entry in kept:
                entry.headers = [*(entry.headers or ()), mark]
        self._items, self._head, self._sent = kept, 0, 0
        self.bytes = sum(e.size for e in kept)
        return len(kept)

    # -- active ----------------------------------------------------------------------------------------
    def waiting(self) -> int:
        """Entries not yet handed to the producer."""
        return len(self._items) - self._sent

    def take(self, limit: int) -> list[Entry]:
        """Up to ``limit`` entries to produce next (they count as handed over)."""
        start = self._sent
        self._sent = min(len(self._items), start + limit)
        return self._items[start : self._sent]

    def unsend(self, count: int) -> None:
        """The last ``count`` entries :meth:`take` gave were not produced: they come next again."""
        self._sent -= count

    def commit(self) -> list[Entry]:
        """The open transaction committed: its entries leave the buffer (returned, in order)."""
        done = self._items[self._head : self._sent]
        self._head = self._sent
        self.bytes -= sum(e.size for e in done)
        self._compact()
        return done

    def rewind(self) -> int:
        """The open transaction was aborted: its entries wait to be produced again; how many."""
        count = self._sent - self._head
        self._sent = self._head
        return count

    def drop_waiting(self, doomed: Callable[[Entry], bool]) -> list[Entry]:
        """Remove the entries not yet handed to the producer that ``doomed`` picks (records Kafka refuses
        for good); returns them."""
        waiting = self._items[self._sent :]
        dropped = [e for e in waiting if doomed(e)]
        if dropped:
            self._items[self._sent :] = [e for e in waiting if not doomed(e)]
            self.bytes -= sum(e.size for e in dropped)
        return dropped

    def _compact(self) -> None:
        head = self._head
        if head > 4096 and head * 2 > len(self._items):
            del self._items[:head]
            self._sent -= head
            self._head = 0
