"""The one assembly path of ``kite-connector run`` and the embedding API: settings → supervised connections.

A connection is one Kite WebSocket (a listener thread), its pipeline and its Kafka producer. Whatever
fails on that thread is logged, counted and answered by rebuilding the pipeline and producer; a
connection that keeps failing gives up, and :meth:`Runtime.failure` says so, so that ``run`` can exit
non-zero for the container's restart policy instead of staying up and streaming nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from connector.config import RunSettings
from connector.kite import Mode, OrderUpdate
from connector.metrics import Metrics, MetricsServer
from connector.pipeline import Pipeline, TickCallback
from connector.serde import Serializers, build_serializers
from connector.sink import KafkaSink, SinkConfig, Topics, ensure_topics
from connector.source import KiteListener, TokenSource
from connector.stats import Stats

__all__ = ["Callbacks", "Connection", "FailureBudget", "Runtime", "topics_of"]

log = logging.getLogger("connector.runtime")
REBUILD_FLUSH_SECONDS = 5.0  # how long a failed producer may take to hand over what it still holds


class FailureBudget:
    """At most ``limit`` failures within ``window`` seconds; None: no limit."""

    def __init__(self, limit: int | None, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self._clock = limit, window, clock
        self._times: deque[float] = deque()

    def spend(self) -> bool:
        """Records a failure; False once there were more than ``limit`` within ``window``."""
        now = self._clock()
        self._times.append(now)
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        return self.limit is None or len(self._times) <= self.limit


@dataclass(slots=True)
class Callbacks:
    """What an embedding application sees, called on the listener thread."""

    on_ticks: TickCallback | None = None
    on_order_update: Callable[[OrderUpdate], None] | None = None
    on_raw: Callable[[bool, bytes], None] | None = None
    on_event: Callable[[str, object], None] | None = None


def topics_of(settings: RunSettings) -> Topics:
    return Topics(
        settings.kafka_topic_ticks, settings.kafka_topic_order_updates, settings.kafka_topic_dead_letters
    )


class Connection:
    """One Kite WebSocket with its pipeline and Kafka producer (None without Kafka), on one thread."""

    def __init__(
        self,
        index: int,
        runtime: Runtime,
        subscriptions: dict[int, Mode],
        stats: Stats,
        budget: FailureBudget,
    ) -> None:
        self.index, self.runtime, self.stats, self.budget = index, runtime, stats, budget
        self.order_updates = index == 0  # with several connections, only the first publishes them
        s = runtime.settings
        self.sink_config = SinkConfig(
            bootstrap_servers=s.kafka_bootstrap_servers,
            topics=runtime.topics,
            max_in_flight=s.max_in_flight,
            low_water=s.low_water_mark,
            policy=s.backpressure_policy,
            compression=s.kafka_compression,
            linger_ms=s.kafka_linger_ms,
            delivery_timeout_ms=s.kafka_delivery_timeout_ms,
            spool_path=s.spool_path / "order_updates.jsonl" if s.spool_path and self.order_updates else None,
            client_id=f"kite-connector-{index}",
            producer_overrides=dict(s.producer_overrides),
        )
        self.sink: KafkaSink | None = None
        self.pipeline = self._assemble()
        self.listener = KiteListener(
            f"kite-listener-{index}",
            s.kite_ws_url,
            s.kite_api_key,
            runtime.tokens,
            subscriptions,
            self.pipeline,
            stats,
            s.kite_watchdog_seconds,
            s.kite_reconnect_max_delay,
            on_event=runtime.callbacks.on_event,
            supervisor=self._rebuild,
        )

    def _assemble(self) -> Pipeline:
        """A new producer (replaying spooled order updates) and the pipeline that feeds it."""
        runtime, c = self.runtime, self.runtime.callbacks
        serializers = runtime.serializers
        if runtime.kafka:
            self.sink = KafkaSink(
                self.sink_config, self.stats, serializers.headers(), runtime.metrics.latency.observe
            )
            if self.order_updates:
                self.sink.replay_spool()
        return Pipeline(
            serializers,
            self.sink,
            self.stats,
            order_updates=self.order_updates,
            on_ticks=c.on_ticks,
            on_order_update=c.on_order_update,
            on_raw=c.on_raw,
            dead_letter_max_bytes=runtime.settings.dead_letter_max_bytes,
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
        self._retire_sink()
        self.pipeline = self._assemble()
        log.warning("connection %d rebuilt (pipeline and producer) after %s", self.index, type(exc).__name__)
        return self.pipeline

    def _retire_sink(self) -> None:
        """Flush what the old producer holds (briefly); undelivered order updates go to the spool."""
        old, self.sink = self.sink, None
        if old is None:
            return
        try:
            lost = old.close(REBUILD_FLUSH_SECONDS)
        except Exception:  # the producer is what failed: its close may fail too
            log.exception("connection %d: closing the failed producer failed too", self.index)
            lost = self.stats.in_flight
        if lost:
            self.stats.abandoned += lost
            log.error("connection %d: %d records unacknowledged by the replaced producer", self.index, lost)
        self.stats.in_flight = 0

    def failure(self) -> str | None:
        """Why this connection no longer streams (it gave up, or its thread ended), or None."""
        listener = self.listener
        if listener.gave_up:
            return f"connection {self.index} gave up: {listener.gave_up}"
        if listener.ident is not None and not listener.is_alive() and not listener.stopping:
            return f"connection {self.index}: listener thread ended"
        return None


class Runtime:
    """Topics, serializers, connections and metrics, built once from :class:`RunSettings`."""

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
    ) -> None:
        self.settings, self.shards, self.kafka = settings, shards, kafka
        self.callbacks = callbacks or Callbacks()
        self.failure_limit = failure_limit
        self.tokens = TokenSource(settings.kite_access_token, settings.kite_access_token_file)
        self.topics = topics_of(settings)
        self.stats = stats or [Stats() for _ in shards]
        self.metrics = metrics or Metrics(self.stats)
        self.serializers: Serializers = build_serializers()
        self.connections: list[Connection] = []
        self.metrics_server: MetricsServer | None = None

    def start(self) -> None:
        s = self.settings
        if self.kafka:
            ensure_topics(
                s.kafka_bootstrap_servers, self.topics, s.kafka_topic_partitions, s.kafka_replication_factor
            )
            self.serializers = build_serializers(
                s.kafka_framing, s.schema_registry_url, self.topics.by_kind()
            )
        self.connections = [
            Connection(i, self, subscriptions, stats, FailureBudget(self.failure_limit, self._window()))
            for i, (subscriptions, stats) in enumerate(zip(self.shards, self.stats, strict=True))
        ]
        if s.metrics_port:
            self.metrics_server = MetricsServer(self.metrics, s.metrics_host, s.metrics_port)
            self.metrics_server.start()
        for connection in self.connections:
            connection.listener.start()

    def _window(self) -> float:
        return self.settings.connection_failure_window_seconds

    def failure(self) -> str | None:
        return next((why for c in self.connections if (why := c.failure()) is not None), None)

    def stop(self) -> int:
        """Stop reading, flush (bounded), report; returns the number of records left unacknowledged."""
        t0 = time.monotonic()
        for c in self.connections:
            c.listener.stop()
            if c.sink is not None:
                c.sink.stop()
        for c in self.connections:
            if c.listener is not threading.current_thread():  # stop() may come from a callback
                c.listener.join(timeout=5)
        budget = self.settings.flush_timeout_seconds
        remaining = 0
        for c in self.connections:
            if c.sink is not None:
                remaining += c.sink.close(max(0.1, budget - (time.monotonic() - t0)))
        for i, stats in enumerate(self.stats):
            log.info("connection %d final counts", i, extra={"fields": {"final": stats.summary()}})
        if remaining:
            log.error("%d records not acknowledged within FLUSH_TIMEOUT_SECONDS", remaining)
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None
        return remaining
