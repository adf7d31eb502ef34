"""Prometheus metrics and ``/healthz``, served by a supervised thread beside the listeners.

Per-connection series carry ``connection="<index>"``. Counters are read from the listeners' plain
:class:`Stats` at scrape time, so the hot path never takes a metrics lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from connector._http import reply
from connector.sink import KINDS
from connector.stats import ConnectionStats, ShardStats

if TYPE_CHECKING:
    from connector.orders import OrderDesk
    from connector.supervise import Supervisor

__all__ = [
    "LATENCY_BUCKETS",
    "Metrics",
    "MetricsServer",
    "counter",
    "gauge",
    "labelled_counter",
    "serve_http",
]

_C, _G = CounterMetricFamily, GaugeMetricFamily
Family = type[CounterMetricFamily | GaugeMetricFamily]
# (kind, name, help, label besides the connection's or shard's, value of one ConnectionStats / ShardStats)
_PER_CONNECTION: tuple[tuple[Family, str, str, str | None, Callable[[ConnectionStats], Any]], ...] = (
    (_C, "kite_messages_received", "WebSocket messages received", "type", lambda s: dict(s.messages)),
    (_C, "kite_ticks_received", "Tick packets decoded", "mode", lambda s: dict(s.ticks)),
    (
        _C,
        "kite_ticks_won",
        "Ticks this connection delivered first (every tick, with one line)",
        None,
        lambda s: s.ticks_won,
    ),
    (
        _C,
        "kite_order_updates_received",
        "Order updates received on this connection",
        None,
        lambda s: s.order_updates,
    ),
    (_C, "kite_errors_received", "Error messages from Kite", None, lambda s: s.kite_errors),
    (_C, "reconnects", "WebSocket reconnects", None, lambda s: s.reconnects),
    (_C, "callback_errors", "Exceptions raised by user callbacks", None, lambda s: s.callback_errors),
    (
        _C,
        "connection_failures",
        "Unexpected errors that ended a shard's pipeline and producer (rebuilt), by type",
        "reason",
        lambda s: dict(s.failures),
    ),
    (_G, "kite_connection_up", "1 while the WebSocket is connected", None, lambda s: float(s.connected)),
    (
        _G,
        "kite_access_token_refused",
        "1 while Kite refuses the access token (HTTP 403) and the connector waits for a new one",
        None,
        lambda s: float(s.token_refused),
    ),
)
_PER_SHARD: tuple[tuple[Family, str, str, str | None, Callable[[ShardStats], Any]], ...] = (
    (_C, "records_produced", "Records handed to the Kafka producer", "topic", lambda s: dict(s.produced)),
    (_C, "records_delivered", "Records acknowledged by Kafka", "topic", lambda s: dict(s.delivered)),
    (_C, "records_failed", "Records Kafka could not take", "topic", lambda s: dict(s.failed)),
    (
        _C,
        "dead_letters",
        "Undecodable input sent to the dead-letter topic",
        "source",
        lambda s: dict(s.dead_letters),
    ),
    (_C, "ticks_conflated", "Ticks replaced by a newer tick under backpressure", None, lambda s: s.conflated),
    (
        _C,
        "backpressure_seconds",
        "Time spent waiting for Kafka to acknowledge",
        None,
        lambda s: s.backpressure_seconds,
    ),
    (
        _C,
        "records_abandoned",
        "Records left unacknowledged by a producer replaced after a failure",
        None,
        lambda s: s.abandoned,
    ),
    (_G, "records_in_flight", "Records produced, not yet acknowledged", None, lambda s: s.in_flight),
    (
        _G,
        "ticks_held",
        "Ticks waiting for room: held for conflation, or backlogged under block",
        None,
        lambda s: s.held,
    ),
)


def _wall(monotonic: float, now_mono: float, now_wall: float) -> float:
    return now_wall - (now_mono - monotonic)


def _families(
    table: tuple[tuple[Family, str, str, str | None, Callable[[Any], Any]], ...],
    owners: Sequence[tuple[list[str], Any]],
    labels: list[str],
) -> Iterator[Metric]:
    """One family per row of ``table``: each owner's value(s), labelled by ``labels`` (and the row's)."""
    for kind, name, doc, label, values in table:
        family = kind(name, doc, labels=[*labels, label] if label else labels)
        for names, stats in owners:
            got = values(stats)
            for k, v in got.items() if isinstance(got, dict) else [("", got)]:
                family.add_metric([*names, k] if label else names, v)
        yield family


class _StatsCollector(Collector):
    """Every connection's and shard's counters, read at scrape time (the hot path takes no lock)."""

    def __init__(
        self, connections: Sequence[ConnectionStats], shards: Sequence[ShardStats], lines: int
    ) -> None:
        self.connections, self.shards, self.lines = connections, shards, lines

    def collect(self) -> Iterator[Metric]:
        per_connection = [([str(i), str(i % self.lines)], s) for i, s in enumerate(self.connections)]
        yield from _families(_PER_CONNECTION, per_connection, ["connection", "line"])
        yield from _families(_PER_SHARD, [([str(i)], s) for i, s in enumerate(self.shards)], ["shard"])
        errors = CounterMetricFamily(
            "kafka_errors", "Errors librdkafka reported to the producers, by kind", labels=["kind"]
        )
        for error_kind in KINDS:
            errors.add_metric([error_kind], sum(s.kafka_errors[error_kind] for s in self.shards))
        yield errors
        yield from self._times()

    def _times(self) -> Iterator[Metric]:
        now_mono, now_wall = time.monotonic(), time.time()
        message = GaugeMetricFamily(
            "kite_last_message_timestamp_seconds",
            "When any message (heartbeats too) last came",
            labels=["connection", "line"],
        )
        latest: dict[str, float] = {}
        for i, s in enumerate(self.connections):
            if s.last_message is not None:
                message.add_metric([str(i), str(i % self.lines)], _wall(s.last_message, now_mono, now_wall))
            for exchange, at in list(s.last_tick.items()):
                latest[exchange] = max(latest.get(exchange, at), at)
        yield message
        tick = GaugeMetricFamily(
            "kite_last_tick_timestamp_seconds", "When a tick of this exchange last came", labels=["exchange"]
        )
        for exchange, at in sorted(latest.items()):
            tick.add_metric([exchange], _wall(at, now_mono, now_wall))
        yield tick


class _ProcessCollector(Collector):
    """The order desk (one per process) and the supervised threads."""

    def __init__(self, orders: OrderDesk, supervisor: Supervisor) -> None:
        self.orders, self.supervisor = orders, supervisor

    def collect(self) -> Iterator[Metric]:
        o = self.orders.stats
        for name, doc, value in (
            (
                "order_updates_duplicate",
                "Order updates dropped: another connection brought them",
                o.duplicates,
            ),
            (
                "order_updates_reconciled",
                "Order updates from Kite's order book (the socket missed them)",
                o.reconciled,
            ),
            ("reconcile_errors", "Failed order-book fetches", o.reconcile_errors),
            (
                "order_log_errors",
                "Order-log writes that failed (the updates were produced without it)",
                o.log_errors,
            ),
            (
                "order_updates_left_in_log",
                "Order updates unacknowledged at stop, kept in the order log",
                o.left_in_log,
            ),
        ):
            yield counter(name, doc, value)
        pending = "Order updates in the write-ahead log not yet acknowledged by Kafka"
        yield gauge("order_log_pending", pending, self.orders.pending())
        if o.reconciled_at is not None:
            last = "When Kite's order book was last fetched"
            yield gauge("reconcile_last_success_timestamp_seconds", last, o.reconciled_at)
        order_log = self.orders.order_log
        if order_log is not None:
            yield gauge("order_log_bytes", "Size of the order log file", order_log.size_bytes)
            free = "Free bytes on the order log's file system"
            yield gauge("order_log_disk_free_bytes", free, order_log.disk_free_bytes())
        up = GaugeMetricFamily("thread_up", "1 while a supervised thread does its work", labels=["thread"])
        for name, running in self.supervisor.states():
            up.add_metric([name], float(running))
        yield up
        failures = CounterMetricFamily(
            "thread_failures", "Exceptions that ended a supervised thread's work", labels=["thread"]
        )
        for name, count in self.supervisor.failures.items():
            failures.add_metric([name], count)
        yield failures


def gauge(name: str, doc: str, value: float | None, labels: Mapping[str, str] | None = None) -> Metric:
    """One gauge sample; none while ``value`` is unknown (e.g. before the first tick), not a made-up one."""
    family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    if value is not None:
        family.add_metric(list((labels or {}).values()), value)
    return family


def counter(name: str, doc: str, value: float) -> Metric:
    family = CounterMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def labelled_counter(name: str, doc: str, label: str, values: Mapping[str, float]) -> Metric:
    """A counter with one label, a sample per value of it."""
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


# receive_to_ack_seconds: half-millisecond steps where a healthy stream lands (KAFKA_LINGER_MS plus an
# acks=all round trip), so a quantile read off the buckets is that close; then coarser, up to a stall.
LATENCY_BUCKETS = (
    *(ms / 1000 for ms in (0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5, 7, 7.5, 8, 8.5, 9, 9.5, 10)),
    *(ms / 1000 for ms in (12.5, 15, 20, 30, 50)),
    *(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class Metrics:
    def __init__(
        self, connections: Sequence[ConnectionStats], shards: Sequence[ShardStats], lines: int = 1
    ) -> None:
        self.connections, self.shards, self.lines = connections, shards, lines
        now = time.monotonic()
        self._progress = [(0, now) for _ in shards]  # per shard: (delivered, when it last moved)
        self.supervisor: Supervisor | None = None
        self.role: Callable[[], str] | None = None  # an HA set's member: standby, taking over or active
        self.registry = CollectorRegistry()
        self.registry.register(_StatsCollector(connections, shards, lines))
        self._process: _ProcessCollector | None = None
        self.latency = Histogram(
            "receive_to_ack_seconds",
            "From WebSocket receipt to Kafka acknowledgement (first record of each message)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.callback_seconds = Histogram(
            "callback_seconds",
            "Time spent in user callbacks on the listener thread",
            ["callback"],
            registry=self.registry,
        )

    def watch(self, orders: OrderDesk, supervisor: Supervisor) -> None:
        """Export the process's order desk and threads too (the runtime calls this once they exist)."""
        if self._process is not None:
            self.registry.unregister(self._process)
        self._process = _ProcessCollector(orders, supervisor)
        self.registry.register(self._process)
        self.supervisor = supervisor

    def healthy(self, stall_seconds: float = 30.0) -> tuple[bool, str]:
        """Every thread works, every shard has a line up, Kafka acknowledged recently if records wait.

        A shard with one of several lines down still streams: healthy, and the answer says which is down.
        Progress is judged here, from the delivered count between checks, so that the delivery callback
        (once per record) does not have to read the clock.
        """
        failure = self.supervisor.failure() if self.supervisor is not None else None
        if failure is not None:
            return False, failure
        now, down = time.monotonic(), []
        for shard, s in enumerate(self.shards):
            refused = s.refused()
            if refused is not None:
                return False, f"shard {shard}: Kafka refuses the producer: {refused}"
            lines = range(shard * self.lines, (shard + 1) * self.lines)
            down += [self._down(i) for i in lines if not self.connections[i].connected]
            if all(not self.connections[i].connected for i in lines):
                return False, down[-1]
            delivered = s.delivered.total()
            if self._progress[shard][0] != delivered or not s.in_flight:
                self._progress[shard] = (delivered, now)
            stalled = now - self._progress[shard][1]
            if stalled > stall_seconds:
                return False, f"shard {shard}: Kafka acknowledged nothing for {stalled:.0f} s"
        ok = "ok" if not down else f"ok, degraded: {'; '.join(down)}"
        return True, ok if self.role is None else f"{ok} ({self.role()})"

    def _down(self, index: int) -> str:
        s = self.connections[index]
        failure = f" (last failure: {s.last_failure})" if s.last_failure else ""
        refused = " (Kite refuses the access token)" if s.token_refused else ""
        return f"connection {index} is down{refused}{failure}"


def serve_http(
    registry: CollectorRegistry, health: Callable[[], tuple[bool, str]], host: str, port: int
) -> ThreadingHTTPServer:
    """An HTTP server (not started) answering /metrics and /healthz."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                reply(self, 200, generate_latest(registry), "text/plain; version=0.0.4")
            elif self.path.startswith("/healthz"):
                ok, why = health()
                reply(self, 200 if ok else 503, why.encode(), "text/plain")
            else:
                reply(self, 404, b"not found", "text/plain")

        def log_message(self, format: str, *args: object) -> None:
            pass

    return ThreadingHTTPServer((host, port), Handler)


class MetricsServer:
    """``/metrics`` and ``/healthz`` of :class:`Metrics`; :meth:`serve` is a supervised thread's body."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.server = serve_http(metrics.registry, metrics.healthy, host, port)
        self.port = self.server.server_address[1]
        self._serving = threading.Event()

    def serve(self, stop: threading.Event) -> None:
        self._serving.set()
        try:
            self.server.serve_forever(poll_interval=0.5)
        finally:
            self._serving.clear()

    def close(self) -> None:
        if self._serving.is_set():  # shutdown() waits for serve_forever: only while it runs
            self.server.shutdown()
        self.server.server_close()
