"""Counters of one connection, kept as plain ints on the hot path and read by the metrics collector."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Stats"]


@dataclass(slots=True)
class Stats:
    """Written by one connection's listener thread only; read (without locking) when metrics are scraped.

    Times are ``time.monotonic()`` readings; the collector turns them into wall-clock times.
    """

    messages: Counter[str] = field(default_factory=Counter)  # binary / text / heartbeat
    ticks: Counter[str] = field(default_factory=Counter)  # by mode
    order_updates: int = 0  # received on this connection (the desk drops those another one brought)
    kite_errors: int = 0
    produced: Counter[str] = field(default_factory=Counter)  # by topic
    delivered: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)  # by source
    conflated: int = 0
    backpressure_seconds: float = 0.0
    backpressure_events: int = 0
    reconnects: int = 0
    callback_errors: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # unexpected errors, by exception type
    last_failure: str | None = None
    abandoned: int = 0  # records left unacknowledged by a producer that was replaced
    connected: bool = False
    token_refused: bool = False  # Kite answered HTTP 403: waiting for a new access token
    last_message: float | None = None  # any message, heartbeats too
    last_tick: dict[str, float] = field(default_factory=dict)  # exchange → when a tick of it came
    in_flight: int = 0
    held: int = 0
    kafka_errors: Counter[str] = field(default_factory=Counter)  # librdkafka's errors, by kind (sink.KINDS)
    kafka_refused: str | None = None  # why Kafka last refused the producer (credentials, TLS, an ACL)
    kafka_refused_delivered: int = 0  # records delivered then: once more are, the refusal is over

    def summary(self) -> dict[str, object]:
        return {
            "messages": dict(self.messages),
            "ticks": sum(self.ticks.values()),
            "order_updates": self.order_updates,
            "produced": sum(self.produced.values()),
            "delivered": sum(self.delivered.values()),
            "failed": sum(self.failed.values()),
            "dead_letters": sum(self.dead_letters.values()),
            "conflated": self.conflated,
            "reconnects": self.reconnects,
            "failures": dict(self.failures),
            "abandoned": self.abandoned,
            "in_flight": self.in_flight,
        }
