"""Kafka sink: produce keyed records, bound what is in flight, apply the backpressure policy; topics."""

from connector.sink._admin import Access, Cluster, TopicSpec, ensure_topics
from connector.sink._diagnose import KINDS, KafkaAccessError, kind_of, refusal_of
from connector.sink._producer import (
    MAX_RECORD_BYTES,
    TICK_ID_HEADER,
    KafkaSink,
    OnDone,
    RecordTooLarge,
    SinkConfig,
    Topics,
    note_refusal,
    tick_id_header,
)
from connector.sink._protocol import Sink

__all__ = [
    "KINDS",
    "MAX_RECORD_BYTES",
    "TICK_ID_HEADER",
    "Access",
    "Cluster",
    "KafkaAccessError",
    "KafkaSink",
    "OnDone",
    "RecordTooLarge",
    "Sink",
    "SinkConfig",
    "TopicSpec",
    "Topics",
    "ensure_topics",
    "kind_of",
    "note_refusal",
    "refusal_of",
    "tick_id_header",
]
