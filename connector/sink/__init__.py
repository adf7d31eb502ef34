"""Kafka sink: produce keyed records, bound what is in flight, apply the backpressure policy."""

from connector.sink._producer import POLICIES, KafkaSink, RecordTooLarge, SinkConfig, Topics, ensure_topics

__all__ = ["POLICIES", "KafkaSink", "RecordTooLarge", "SinkConfig", "Topics", "ensure_topics"]
