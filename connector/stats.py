"""Counters kept as plain numbers on the hot path and read by the metrics collector at scrape time.

A shard is a set of instruments with one pipeline and one Kafka producer; each of its lines is a
WebSocket (a connection) subscribed to all of them. :class:`ConnectionStats` is what one WebSocket saw,
:class:`ShardStats` what its shard's pipeline and producer did. Each is written by one thread at a time
(a connection's listener; the shard's pipeline under its lock) and read without locking.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["ConnectionStats", "ShardStats"]


@dataclass(slots=True)
class ConnectionStats:
    """One WebSocket. Times are ``time.monotonic()`` readings; the collector turns them into wall time."""

    messages: Counter[str] = field(default_factory=Counter)  # binary / text / heartbeat
    ticks: Counter[str] = field(default_factory=Counter)  # packets decoded, by mode
    ticks_won: int = 0  # ticks this line delivered first (all of them with one line)
    order_updates: int = 0  # received here (the order desk drops those another line brought too)
    kite_errors: int = 0
    reconnects: int = 0
    callback_errors: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # unexpected errors, by exception type
    last_failure: str | None = None
    connected: bool = False
    token_refused: bool = False  # Kite answered HTTP 403: waiting for a new access token
    last_message: float | None = None  # any message, heartbeats too
    last_tick: dict[str, float] = field(default_factory=dict)  # exchange → when a tick of it came

    def summary(self) -> dict[str, object]:
        return {
            "messages": dict(self.messages),
            "ticks": sum(self.ticks.values()),
            "ticks_won": self.ticks_won,
            "order_updates": self.order_updates,
            "reconnects": self.reconnects,
            "failures": dict(self.failures),
        }


@dataclass(slots=True)
class ShardStats:
    """One shard's pipeline and producer."""

    produced: Counter[str] = field(default_factory=Counter)  # by topic
    delivered: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)  # by source
    conflated: int = 0
    backpressure_seconds: float = 0.0
    backpressure_events: int = 0
    abandoned: int = 0  # records left unacknowledged by a producer that was replaced
    in_flight: int = 0
    held: int = 0
    kafka_errors: Counter[str] = field(default_factory=Counter)  # librdkafka's errors, by kind (sink.KINDS)
    kafka_refused: str | None = None  # why Kafka last refused the producer (credentials, TLS, an ACL)
    kafka_refused_topic: str | None = None  # the topic an ACL refused (None: the whole producer)
    kafka_refused_delivered: int = 0  # records delivered then (to that topic): once more are, it is over

    def refused(self) -> str | None:
        """Why Kafka refuses the producer, while nothing was delivered since (to the topic refused)."""
        topic = self.kafka_refused_topic
        delivered = self.delivered[topic] if topic is not None else self.delivered.total()
        return self.kafka_refused if delivered <= self.kafka_refused_delivered else None

    def summary(self) -> dict[str, object]:
        return {
            "produced": sum(self.produced.values()),
            "delivered": sum(self.delivered.values()),
            "failed": sum(self.failed.values()),
            "dead_letters": sum(self.dead_letters.values()),
            "conflated": self.conflated,
            "abandoned": self.abandoned,
            "in_flight": self.in_flight,
        }
