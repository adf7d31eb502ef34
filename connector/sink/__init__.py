"""Kafka sink: produce keyed records, bound what is in flight, apply the backpressure policy."""

from connector.sink._producer import POLICIES, KafkaSink, SinkConfig, Topics, ensure_topics

__all__ = ["POLICIES", "KafkaSink", "SinkConfig", "Topics", "ensure_topics"]
