"""Kafka sink: produce keyed records, bound what is in flight, apply the backpressure policy."""

from connector.sink._producer import (
    MAX_RECORD_BYTES,
    POLICIES,
    KafkaSink,
    RecordTooLarge,
    SinkConfig,
    Topics,
    ensure_topics,
)

__all__ = [
    "MAX_RECORD_BYTES",
    "POLICIES",
    "KafkaSink",
    "RecordTooLarge",
    "SinkConfig",
    "Topics",
    "ensure_topics",
]
