"""Prometheus metrics and ``/healthz``, served on a small HTTP thread beside the listeners."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from connector._http import reply
from connector.stats import Stats

__all__ = ["Exposed", "Metrics", "MetricsServer"]


class _StatsCollector(Collector):
    """Reads the listeners' plain counters at scrape time, so the hot path never takes a metrics lock."""

    def __init__(self, shards: Sequence[Stats]) -> None:
        self.shards = shards

    def collect(self) -> Iterator[Metric]:
        def counter(
            name: str, doc: str, label: str | None, values: Callable[[Stats], dict[str, float] | float]
        ) -> Metric:
            family = CounterMetricFamily(name, doc, labels=[label] if label else None)
            totals: dict[str, float] = {}
            for s in self.shards:
                got = values(s)
                for k, v in got.items() if isinstance(got, dict) else [("", got)]:
                    totals[k] = totals.get(k, 0) + v
            for k, v in totals.items():
                family.add_metric([k] if label else [], v)
            return family

        yield counter(
            "kite_messages_received", "WebSocket messages received", "type", lambda s: dict(s.messages)
        )
        yield counter("kite_ticks_received", "Tick packets decoded", "mode", lambda s: dict(s.ticks))
        yield counter(
            "kite_order_updates_received", "Order updates received", None, lambda s: s.order_updates
        )
        yield counter("kite_errors_received", "Error messages from Kite", None, lambda s: s.kite_errors)
        yield counter(
            "records_produced", "Records handed to the Kafka producer", "topic", lambda s: dict(s.produced)
        )
        yield counter(
            "records_delivered", "Records acknowledged by Kafka", "topic", lambda s: dict(s.delivered)
        )
        yield counter("records_failed", "Records Kafka could not take", "topic", lambda s: dict(s.failed))
        yield counter(
            "dead_letters",
            "Undecodable messages sent to the dead-letter topic",
            "source",
            lambda s: dict(s.dead_letters),
        )
        yield counter(
            "ticks_conflated",
            "Ticks replaced by a newer tick under backpressure",
            None,
            lambda s: s.conflated,
        )
        yield counter(
            "order_updates_spooled",
            "Order updates left unacknowledged in the order log at shutdown (produced again at next start)",
            None,
            lambda s: s.spooled,
        )
        yield counter(
            "backpressure_seconds",
            "Time spent waiting for Kafka to acknowledge",
            None,
            lambda s: s.backpressure_seconds,
        )
        yield counter("reconnects", "WebSocket reconnects", None, lambda s: s.reconnects)
        yield counter(
            "callback_errors", "Exceptions raised by user callbacks", None, lambda s: s.callback_errors
        )
        yield counter(
            "connection_failures",
            "Unexpected errors that ended a connection's pipeline and producer (rebuilt), by exception type",
            "reason",
            lambda s: dict(s.failures),
        )
        yield counter(
            "order_updates_reconciled",
            "Order updates published from Kite's order book (the socket did not deliver them)",
            None,
            lambda s: s.order_updates_reconciled,
        )
        yield counter("reconcile_errors", "Failed order-book fetches", None, lambda s: s.reconcile_errors)
        yield counter(
            "order_log_errors",
            "Order-log writes that failed (the updates were produced without it)",
            None,
            lambda s: s.spool_errors,
        )
        yield counter(
            "records_abandoned",
            "Records left unacknowledged by a producer replaced after a failure",
            None,
            lambda s: s.abandoned,
        )
        in_flight = GaugeMetricFamily("records_in_flight", "Records produced, not yet acknowledged")
        in_flight.add_metric([], sum(s.in_flight for s in self.shards))
        yield in_flight
        held = GaugeMetricFamily(
            "ticks_held", "Ticks waiting for room: held for conflation, or backlogged under block"
        )
        held.add_metric([], sum(s.held for s in self.shards))
        yield held
        connected = GaugeMetricFamily("kite_connections_up", "Connected WebSockets")
        connected.add_metric([], sum(1 for s in self.shards if s.connected))
        yield connected


class Metrics:
    def __init__(self, shards: Sequence[Stats]) -> None:
        self.shards = shards
        now = time.monotonic()
        self._progress = [(0, now) for _ in shards]  # per connection: (delivered, when it last moved)
        self.registry = CollectorRegistry()
        self.registry.register(_StatsCollector(shards))
        self.latency = Histogram(
            "receive_to_ack_seconds",
            "From WebSocket receipt to Kafka acknowledgement (first record of each message)",
            # fine steps where a healthy stream lands (linger.ms plus an acks=all round trip)
            buckets=(
                *(ms / 1000 for ms in (0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12.5, 15, 20, 30, 50)),
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
            ),
            registry=self.registry,
        )
        self.callback_seconds = Histogram(
            "callback_seconds",
            "Time spent in user callbacks on the listener thread",
            ["callback"],
            registry=self.registry,
        )

    def healthy(self, stall_seconds: float = 30.0) -> tuple[bool, str]:
        """Connected and producing: every connection is up; Kafka acknowledged recently if records wait.

        Progress is judged here, from the delivered count between checks, so that the delivery
        callback (once per record) does not have to read the clock.
        """
        now = time.monotonic()
        for i, s in enumerate(self.shards):
            delivered = s.delivered.total()
            if self._progress[i][0] != delivered or not s.in_flight:
                self._progress[i] = (delivered, now)
            if not s.connected:
                failure = f" (last failure: {s.last_failure})" if s.last_failure else ""
                return False, f"connection {i} is down{failure}"
            stalled = now - self._progress[i][1]
            if stalled > stall_seconds:
                return False, f"connection {i}: Kafka acknowledged nothing for {stalled:.0f} s"
        return True, "ok"


class Exposed(Protocol):
    """What :class:`MetricsServer` serves: a registry for /metrics and a verdict for /healthz."""

    registry: CollectorRegistry

    def healthy(self) -> tuple[bool, str]: ...


class MetricsServer:
    def __init__(self, metrics: Exposed, host: str, port: int) -> None:
        outer = metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    reply(self, 200, generate_latest(outer.registry), "text/plain; version=0.0.4")
                elif self.path.startswith("/healthz"):
                    ok, why = outer.healthy()
                    reply(self, 200 if ok else 503, why.encode(), "text/plain")
                else:
                    reply(self, 404, b"not found", "text/plain")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
