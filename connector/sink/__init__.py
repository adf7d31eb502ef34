"""Kafka sink: produce keyed records, bound what is in flight, apply the backpressure policy; topics."""

from connector.sink._admin import TopicSpec, cluster_metadata, ensure_topics
from connector.sink._producer import MAX_RECORD_BYTES, KafkaSink, OnDone, RecordTooLarge, SinkConfig, Topics

__all__ = [
    "MAX_RECORD_BYTES",
    "KafkaSink",
    "OnDone",
    "RecordTooLarge",
    "SinkConfig",
    "TopicSpec",
    "Topics",
    "cluster_metadata",
    "ensure_topics",
]
