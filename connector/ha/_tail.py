"""What Kafka already holds, read back committed (``read_committed``): the topics' tail at takeover, and
the order updates a standby sees the active commit.

The takeover reads after the new active's ``init_transactions`` fenced the old one: what the old active
had not committed by then never becomes visible, so it is exactly what is not found here.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaError, Message, TopicPartition

from connector.errors import SinkError
from connector.ha._buffer import Ident
from connector.ha._ident import header
from connector.logs import sample
from connector.orders import RECORD_ID_HEADER

__all__ = ["IdentOf", "OrderWatcher", "committed_consumer", "order_ident", "read_back"]

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
        },
        logger=sample(logging.getLogger("librdkafka")),
    )


def order_ident(msg: Message) -> Ident | None:
    headers = msg.headers()
    record_id = header(headers if isinstance(headers, list) else None, RECORD_ID_HEADER)
    return None if record_id is None else (msg.topic() or "", b"", record_id)


def _start_at(consumer: Consumer, since: Mapping[str, int]) -> list[TopicPartition]:
    """Every partition of each topic at its first record stamped ``since[topic]`` or later (or its end)."""
    meta = consumer.list_topics(timeout=_KAFKA_TIMEOUT)
    wanted = [TopicPartition(t, p, ms) for t, ms in since.items() for p in meta.topics[t].partitions]
    found = consumer.offsets_for_times(wanted, timeout=_KAFKA_TIMEOUT)
    return [
        TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END) for tp in found
    ]


def read_back(
    consumer: Consumer, topics: Mapping[str, tuple[int, IdentOf]], timeout: float = 60.0
) -> tuple[set[Ident], int]:
    """``topics``: topic → (since when, in ms, how its records are named). The idents of the records
    stamped that late or later, read to the end; and how many records were read."""
    assignment = _start_at(consumer, {t: since for t, (since, _) in topics.items()})
    consumer.assign(assignment)
    pending = {(tp.topic, tp.partition) for tp in assignment}
    present: set[Ident] = set()
    read = 0
    deadline = time.monotonic() + timeout
    try:
        while pending:
            if time.monotonic() > deadline:
                raise SinkError(f"the tail of {sorted(topics)} was not read within {timeout:.0f} s")
            for msg in consumer.consume(10_000, 0.2):
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise SinkError(f"reading back {msg.topic()}: {error.str()}")
                    pending.discard((msg.topic() or "", msg.partition() or 0))
                    continue
                read += 1
                ident = topics[msg.topic() or ""][1](msg)
                if ident is not None:
                    present.add(ident)
    finally:
        consumer.unassign()
    return present, read


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
