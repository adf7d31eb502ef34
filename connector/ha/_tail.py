"""What Kafka already holds, read back committed (``read_committed``): the topics' tail at takeover, and
the order updates a standby sees the active commit.

The takeover finishes reading after the new active's ``init_transactions`` fenced the old one: what the
old active had not committed by then never becomes visible, so it is exactly what is not found here.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, Message, TopicPartition

from connector.errors import SinkError
from connector.ha._buffer import Ident
from connector.ha._ident import header
from connector.logs import sample
from connector.orders import RECORD_ID_HEADER

__all__ = ["IdentOf", "OrderWatcher", "Tail", "committed_consumer", "order_ident"]

log = logging.getLogger("connector.ha")
IdentOf = Callable[[Message], "Ident | None"]
_KAFKA_TIMEOUT = 30.0
_SEEN_IDS = 65_536  # record ids remembered: far more order updates than a standby holds pending


def committed_consumer(client: Mapping[str, Any], name: str) -> Consumer:
    """A consumer of committed records that joins no group (partitions are assigned) and commits nothing."""
    return Consumer(
        {
            **client,
            "group.id": name,  # required by the client; unused, as nothing is subscribed or committed
            "client.id": name,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # the end of a partition is known from an empty fetch: the broker must not hold it back
            "fetch.wait.max.ms": 10,
        },
        logger=sample(logging.getLogger("librdkafka")),
    )


def order_ident(msg: Message) -> Ident | None:
    record_id = header(msg.headers(), RECORD_ID_HEADER)
    return None if record_id is None else (msg.topic() or "", b"", record_id)


def _start_at(consumer: Consumer, since: Mapping[str, int]) -> list[TopicPartition]:
    """Every partition of each topic at its first record stamped ``since[topic]`` or later (or its end)."""
    deadline = time.monotonic() + _KAFKA_TIMEOUT
    while True:  # right after the topics were created their leaders may not be known everywhere yet
        try:
            meta = consumer.list_topics(timeout=_KAFKA_TIMEOUT)
            wanted = [TopicPartition(t, p, ms) for t, ms in since.items() for p in meta.topics[t].partitions]
            found = consumer.offsets_for_times(wanted, timeout=_KAFKA_TIMEOUT)
            break
        except KafkaException as exc:  # NOT_LEADER_FOR_PARTITION and the like: they pass
            if time.monotonic() > deadline:
                raise SinkError(f"cannot find where to read {sorted(since)} from: {exc}") from exc
            time.sleep(0.2)
    return [
        TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END) for tp in found
    ]


class Tail:
    """The records of some topics since some time, as they are committed, read in rounds: the first while
    the new active waits for its producer ids, the last once the old active is fenced (from where the one
    before stopped, so the bulk is read while waiting).

    ``topics``: topic → (since when, in ms, how its records are named). :attr:`present` gathers the idents
    of every record stamped that late or later; :attr:`read` counts them all.
    """

    def __init__(self, consumer: Consumer, topics: Mapping[str, tuple[int, IdentOf]]) -> None:
        self.consumer, self.topics = consumer, topics
        starts = _start_at(consumer, {t: since for t, (since, _) in topics.items()}) if topics else []
        self._next = {(tp.topic, tp.partition): tp.offset for tp in starts}
        self.present: set[Ident] = set()
        self.read = 0

    def read_to_end(self, timeout: float = 60.0) -> None:
        """Read on from where the last round stopped, to the end of every partition as it is now."""
        consumer, named = self.consumer, self.topics
        consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in self._next.items()])
        pending = set(self._next)
        deadline = time.monotonic() + timeout
        try:
            while pending:
                if time.monotonic() > deadline:
                    raise SinkError(f"the tail of {sorted(named)} was not read within {timeout:.0f} s")
                for msg in consumer.consume(10_000, 0.2):
                    where, offset = (msg.topic() or "", msg.partition() or 0), msg.offset() or 0
                    error = msg.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            raise SinkError(f"reading back {where[0]}: {error.str()}")
                        self._next[where] = offset  # the end: the next round starts there
                        pending.discard(where)
                        continue
                    self._next[where] = offset + 1
                    self.read += 1
                    ident = named[where[0]][1](msg)
                    if ident is not None:
                        self.present.add(ident)
        finally:
            consumer.unassign()


class OrderWatcher:
    """A standby's view of the order-update topic: record ids of updates committed there, so that the
    ones it logged itself leave its order log (best effort: the takeover reads back again for certain)."""

    def __init__(self, consumer: Consumer, topic: str) -> None:
        self.consumer, self.topic = consumer, topic
        self.seen: OrderedDict[str, None] = OrderedDict()

    def start(self, since_ms: int) -> None:
        self.consumer.assign(_start_at(self.consumer, {self.topic: since_ms}))

    def poll(self) -> int:
        """Take what has arrived; how many new record ids."""
        new = 0
        for msg in self.consumer.consume(1000, 0):
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("HA: reading %s: %s", self.topic, error.str())
                continue
            ident = order_ident(msg)
            if ident is not None:
                self.seen[ident[2].decode(errors="replace")] = None
                new += 1
        while len(self.seen) > _SEEN_IDS:
            self.seen.popitem(last=False)
        return new

    def stop(self) -> None:
        """An active has no use for it: no more fetching."""
        self.consumer.unassign()
