"""Kafka sink: produce keyed records, bound what is in flight, apply the backpressure policy; topics."""

from connector.sink._admin import TopicSpec, cluster_metadata, ensure_topics
from connector.sink._producer import (
    MAX_RECORD_BYTES,
    TICK_ID_HEADER,
    KafkaSink,
    OnDone,
    RecordTooLarge,
    SinkConfig,
    Topics,
    tick_id_header,
)
from connector.sink._protocol import Sink

__all__ = [
    "MAX_RECORD_BYTES",
    "TICK_ID_HEADER",
    "KafkaSink",
    "OnDone",
    "RecordTooLarge",
    "Sink",
    "SinkConfig",
    "TopicSpec",
    "Topics",
    "cluster_metadata",
    "ensure_topics",
    "tick_id_header",
]
