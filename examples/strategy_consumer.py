"""A small strategy reading the ticks topic: a fast/slow moving-average crossover per instrument.

It shows how a downstream service reads what the connector writes: a plain confluent-kafka consumer and
the project's deserializer (``AvroReader`` detects the framing and the schema version; the Confluent
framing, docker-compose's default, needs SCHEMA_REGISTRY_URL). It reads the connector's own KAFKA_* and
SCHEMA_REGISTRY_* connection settings, so TLS, SASL and registry credentials work the same way.
    SCHEMA_REGISTRY_URL=http://127.0.0.1:8081/apis/ccompat/v7 python examples/strategy_consumer.py
"""

from __future__ import annotations

import json
import os
from collections import defaultdict, deque

from confluent_kafka import Consumer

from connector.config import KafkaClient, Registry
from connector.serde import AvroReader

FAST, SLOW = 5, 20
MAX_RECORDS = int(os.environ.get("EXAMPLE_MAX_RECORDS", "0"))
IDLE_POLLS = int(os.environ.get("EXAMPLE_IDLE_POLLS", "0"))


def main() -> None:
    kafka, registry = KafkaClient.load(), Registry.load()
    reader = AvroReader(registry.client_config() if registry.url else None)
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": os.environ.get("EXAMPLE_GROUP", "ma-crossover"),
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([os.environ.get("KAFKA_TOPIC_TICKS", "kite.ticks")])
    prices: dict[int, deque[float]] = defaultdict(lambda: deque(maxlen=SLOW))
    above: dict[int, bool] = {}
    seen = idle = 0
    try:
        while not (MAX_RECORDS and seen >= MAX_RECORDS) and not (IDLE_POLLS and idle >= IDLE_POLLS):
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                idle += 1
                continue
            idle = 0
            _, tick = reader.read(msg.value() or b"")
            seen += 1
            window = prices[tick["instrument_token"]]
            window.append(tick["last_price"])
            if len(window) < SLOW:
                continue
            fast = sum(list(window)[-FAST:]) / FAST
            slow = sum(window) / SLOW
            now_above = fast > slow
            if above.get(tick["instrument_token"]) not in (None, now_above):
                side = "BUY" if now_above else "SELL"
                print(
                    json.dumps(
                        {"signal": side, "token": tick["instrument_token"], "price": tick["last_price"]}
                    )
                )
            above[tick["instrument_token"]] = now_above
    finally:
        consumer.close()
    print(json.dumps({"ticks_read": seen, "instruments": len(prices)}))


if __name__ == "__main__":
    main()
