"""Proves the harness: a real broker keeps keyed records whole, once, and per-key ordered."""

from __future__ import annotations

import uuid
from collections import defaultdict

import pytest
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tests.harness import earliest_consumer

pytestmark = pytest.mark.integration

RECORDS = 10_000
KEYS = 97


def test_keyed_records_arrive_once_and_in_order_per_key(kafka_bootstrap: str) -> None:
    topic = f"harness-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(timeout=30)

    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    acked: list[tuple[bytes, bytes, int]] = []
    failed: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failed.append(err)
        else:
            acked.append((msg.key() or b"", msg.value() or b"", msg.partition() or 0))

    sent = [(f"key-{i % KEYS}".encode(), f"{i}".encode()) for i in range(RECORDS)]
    for key, value in sent:
        producer.produce(topic, value, key, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not failed
    assert len(acked) == RECORDS

    consumer = earliest_consumer(kafka_bootstrap, topic, "verify")
    received: list[tuple[bytes, bytes, int]] = []
    try:
        for _ in range(600):
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                assert msg.error() is None, msg.error()
                received.append((msg.key() or b"", msg.value() or b"", msg.partition() or 0))
            if len(received) >= RECORDS:
                break
    finally:
        consumer.close()

    assert sorted((k, v) for k, v, _ in received) == sorted(sent), "every record exactly once"
    partitions_of: dict[bytes, set[int]] = defaultdict(set)
    values_of: dict[bytes, list[int]] = defaultdict(list)
    for key, value, partition in received:
        partitions_of[key].add(partition)
        values_of[key].append(int(value))
    assert all(len(p) == 1 for p in partitions_of.values()), "a key's records share one partition"
    assert all(v == sorted(v) for v in values_of.values()), "a key's records keep their order"
    assert len({p for ps in partitions_of.values() for p in ps}) == 3
