"""The one assembly path of ``kite-connector run`` and the embedding API: settings → supervised threads.

A connection is one Kite WebSocket (a listener thread), its pipeline and its Kafka producer. Order
updates from every connection meet at one :class:`OrderDesk`; a reconciler thread fills in what the
sockets missed; a metrics thread serves ``/metrics`` and ``/healthz``. Every one of those threads is
watched by one :class:`Supervisor`: what fails on a listener is answered by rebuilding its pipeline and
producer, a reconciler or metrics thread that raises is started again, and whatever keeps failing or
ends unasked makes :meth:`Runtime.failure` say so, so that ``run`` exits for its restart policy instead
of staying up and streaming nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from connector.config import RunSettings
from connector.kite import Mode, OrderUpdate
from connector.metrics import Metrics, MetricsServer
from connector.orders import OrderBook, OrderDesk, Reconciler, open_order_log
from connector.pipeline import Pipeline, TickCallback
from connector.serde import Serializers, build_serializers, registry_client
from connector.sink import KafkaSink, SinkConfig, Topics, TopicSpec, ensure_topics
from connector.source import KiteListener, TokenSource
from connector.stats import Stats
from connector.supervise import FailureBudget, SupervisedThread, Supervisor

__all__ = ["Callbacks", "Connection", "Runtime"]

log = logging.getLogger("connector.runtime")
REBUILD_FLUSH_SECONDS = 5.0  # how long a failed producer may take to hand over what it still holds


@dataclass(slots=True)
class Callbacks:
    """What an embedding application sees, called on the listener thread."""

    on_ticks: TickCallback | None = None
    on_order_update: Callable[[OrderUpdate], None] | None = None
    on_raw: Callable[[bool, bytes], None] | None = None
    on_event: Callable[[str, object], None] | None = None


class Connection:
    """One Kite WebSocket with its pipeline and Kafka producer (None without Kafka), on one thread."""

    def __init__(self, index: int, runtime: Runtime, subscriptions: dict[int, Mode], stats: Stats) -> None:
        self.index, self.runtime, self.stats = index, runtime, stats
        self.budget = FailureBudget(runtime.failure_limit, runtime.settings.connection_failure_window_seconds)
        s = runtime.settings
        self.sink_config = SinkConfig.of(s, f"kite-connector-{index}")
        self.sink: KafkaSink | None = None
        self.subscribed = set(subscriptions)  # every token ever subscribed here (the listener adds to it)
        self.pipeline = self._assemble()
        self.listener = KiteListener(
            runtime.thread_name(index),
            s.kite_ws_url,
            s.kite_api_key or "",
            runtime.tokens,
            subscriptions,
            self.pipeline,
            stats,
            s.kite_watchdog_seconds,
            s.kite_reconnect_max_delay,
            drain_seconds=s.flush_timeout_seconds / 4,
            subscribed=self.subscribed,
            on_event=self._on_event,
            supervisor=self._rebuild,
        )

    def _on_event(self, event: str, arg: object) -> None:
        reconciler = self.runtime.reconciler
        if event == "connect" and reconciler is not None:
            reconciler.wake()  # what happened while disconnected is only in the order book
        if self.runtime.callbacks.on_event is not None:
            self.runtime.callbacks.on_event(event, arg)

    def _assemble(self) -> Pipeline:
        """A new producer (producing what the order log holds for nobody) and the pipeline that feeds it."""
        runtime, c = self.runtime, self.runtime.callbacks
        if runtime.kafka:
            self.sink = KafkaSink(
                self.sink_config, self.stats, runtime.serializers.headers(), runtime.metrics.latency.observe
            )
            runtime.orders.attach(self.sink)
        return Pipeline(
            runtime.serializers,
            self.sink,
            self.stats,
            orders=runtime.orders,
            reconciled=self.index == 0,
            on_ticks=c.on_ticks,
            on_raw=c.on_raw,
            dead_letter_max_bytes=runtime.settings.dead_letter_max_bytes,
            timestamp_window_ms=int(runtime.settings.tick_timestamp_window_seconds * 1000),
            subscribed=self.subscribed,
        )

    def _rebuild(self, exc: Exception) -> Pipeline | None:
        """The listener's supervisor: a new pipeline and producer, or None once the budget is spent."""
        if not self.budget.spend():
            s = self.runtime.settings
            log.critical(
                "connection %d failed more than %d times in %.0f s (CONNECTION_FAILURE_LIMIT): giving up",
                self.index,
                s.connection_failure_limit,
                s.connection_failure_window_seconds,
            )
            return None
        self.pipeline.retire()
        lost = self._close_sink(REBUILD_FLUSH_SECONDS)
        if lost:
            self.stats.abandoned += lost
            log.error("connection %d: %d records unacknowledged by the replaced producer", self.index, lost)
        self.stats.in_flight = 0
        self.pipeline = self._assemble()
        log.warning("connection %d rebuilt (pipeline and producer) after %s", self.index, type(exc).__name__)
        return self.pipeline

    def _close_sink(self, timeout: float) -> int:
        """Close the producer (flushing up to ``timeout``); the records it left unacknowledged."""
        sink, self.sink = self.sink, None
        if sink is None:
            return 0
        try:
            remaining = sink.close(timeout)
        except Exception:  # a producer that failed may fail to close too; the rest must still close
            log.exception("connection %d: closing the producer failed", self.index)
            remaining = self.stats.in_flight
        self.runtime.orders.detach(sink)
        return remaining

    def close(self, timeout: float) -> int:
        """Flush (bounded) and close the producer; records left unacknowledged."""
        self.pipeline.retire()
        return self._close_sink(timeout)


class Runtime:
    """Topics, serializers, order desk, connections, metrics and their threads, built from settings."""

    def __init__(
        self,
        settings: RunSettings,
        shards: list[dict[int, Mode]],
        *,
        kafka: bool = True,
        callbacks: Callbacks | None = None,
        failure_limit: int | None = None,
        stats: list[Stats] | None = None,
        metrics: Metrics | None = None,
        thread_name: Callable[[int], str] = "kite-listener-{}".format,
    ) -> None:
        self.settings, self.shards, self.kafka = settings, shards, kafka
        self.thread_name = thread_name
        self.callbacks = callbacks or Callbacks()
        self.failure_limit = failure_limit
        self.tokens = TokenSource(settings.kite_access_token, settings.kite_access_token_file)
        self.topics = Topics(
            settings.kafka_topic_ticks, settings.kafka_topic_order_updates, settings.kafka_topic_dead_letters
        )
        self.supervisor = Supervisor(
            settings.connection_failure_limit, settings.connection_failure_window_seconds
        )
        self.stats = stats or [Stats() for _ in shards]
        self.metrics = metrics or Metrics(self.stats)
        self.serializers: Serializers = build_serializers()
        self.orders = OrderDesk(None, self.topics.order_updates, [])  # the real one is built at start()
        self.connections: list[Connection] = []
        self.reconciler: Reconciler | None = None
        self._threads: list[SupervisedThread] = []
        self.metrics_server: MetricsServer | None = None

    def start(self) -> None:
        s = self.settings
        if self.kafka:
            self._prepare_kafka()
        self.orders = self._order_desk()
        self.metrics.watch(self.orders, self.supervisor)
        if s.reconcile_url and self.orders.book is not None:
            self.reconciler = Reconciler(
                s.reconcile_url,
                s.kite_api_key or "",
                self.tokens.get,
                self.orders.book,
                self.orders,
                s.order_reconcile_interval_seconds or None,
            )
            self._threads.append(self.supervisor.spawn("kite-reconciler", self.reconciler.run))
        self.connections = [
            Connection(i, self, subscriptions, stats)
            for i, (subscriptions, stats) in enumerate(zip(self.shards, self.stats, strict=True))
        ]
        if s.metrics_port:
            server = self.metrics_server = MetricsServer(self.metrics, s.metrics_host, s.metrics_port)
            self._threads.append(self.supervisor.spawn("metrics", server.serve))
        for thread in self._threads:
            thread.start()
        for connection in self.connections:
            self.supervisor.watch(connection.listener)
            connection.listener.start()

    def _prepare_kafka(self) -> None:
        """Topics created, schemas registered."""
        s = self.settings
        layout = s.layout
        ensure_topics(
            s.kafka.client_config(),
            [TopicSpec(t, layout.topic_partitions, layout.replication_factor) for t in self.topics.all()],
        )
        self.serializers = build_serializers(
            s.kafka_framing,
            s.registry.url,
            self.topics.by_kind(),
            # retries are register_value_schemas' own, bounded by the timeout
            registry_client(s.registry.client_config(), retries=0) if s.registry.url else None,
            registry_timeout=s.registry.timeout_seconds,
        )

    def _order_desk(self) -> OrderDesk:
        s, kafka = self.settings, self.kafka
        path = s.order_log_path if kafka else None
        return OrderDesk(
            self.serializers.order_update if kafka else None,
            self.topics.order_updates,
            list(self.serializers.headers().get("order_update") or []),
            open_order_log(path) if path else None,
            OrderBook() if s.reconcile_url else None,
            self.callbacks.on_order_update,
        )

    def failure(self) -> str | None:
        """Why the process no longer does its work (a thread gave up or ended unasked), or None."""
        return self.supervisor.failure()

    def stop(self) -> int:
        """Stop reading, flush (bounded), report; returns the number of records left unacknowledged."""
        t0 = time.monotonic()
        budget = self.settings.flush_timeout_seconds
        for c in self.connections:
            c.listener.stop()
            if c.sink is not None:
                c.sink.stop()
        for thread in self._threads:
            thread.stop()
        if self.reconciler is not None:
            self.reconciler.wake()
        for c in self.connections:
            if c.listener.ident is not None and c.listener is not threading.current_thread():
                c.listener.join(timeout=budget / 4 + 5)  # stop() may come from a callback on it
        remaining = 0
        for c in self.connections:
            remaining += c.close(max(0.1, budget - (time.monotonic() - t0)))
        self.orders.close()
        for i, stats in enumerate(self.stats):
            log.info("connection %d final counts", i, extra={"fields": {"final": stats.summary()}})
        if remaining:
            log.error("%d records not acknowledged within FLUSH_TIMEOUT_SECONDS", remaining)
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None
        for thread in self._threads:
            thread.join(1)
        return remaining
