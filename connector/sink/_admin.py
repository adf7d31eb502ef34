"""Topics at start-up, shared by ``run`` and ``candles``: wait for the cluster, create what is missing."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._metadata import ClusterMetadata
from confluent_kafka.cimpl import NewTopic

from connector.errors import SinkError

__all__ = ["TopicSpec", "cluster_metadata", "ensure_topics"]

log = logging.getLogger("connector.sink")
_CREATE_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    config: Mapping[str, str] = field(default_factory=dict)


def cluster_metadata(admin: AdminClient, where: str, timeout: float) -> ClusterMetadata:
    """The cluster's metadata, waiting up to ``timeout`` seconds for it to answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return admin.list_topics(timeout=min(5.0, max(0.1, deadline - time.monotonic())))
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise SinkError(
                    f"Kafka at {where} did not answer in {timeout:.0f} s ({exc}): "
                    "check KAFKA_BOOTSTRAP_SERVERS and that the broker is up"
                ) from exc
            log.warning("waiting for Kafka at %s", where)
            time.sleep(1)


def ensure_topics(
    client: Mapping[str, Any], topics: Sequence[TopicSpec], timeout: float = 60.0
) -> ClusterMetadata:
    """Creates the topics that do not exist yet; returns the metadata read before creating them."""
    admin = AdminClient({**client, "log_level": 3})
    meta = cluster_metadata(admin, str(client.get("bootstrap.servers")), timeout)
    missing = [
        NewTopic(t.name, t.partitions, t.replication, config=dict(t.config))
        for t in topics
        if t.name not in meta.topics
    ]
    for name, future in admin.create_topics(missing).items() if missing else ():
        try:
            future.result(timeout=_CREATE_TIMEOUT)
            log.info("created topic %s", name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise SinkError(f"cannot create topic {name}: {exc}") from exc
    return meta
