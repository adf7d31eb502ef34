"""The one assembly path of ``kite-connector run`` and the embedding API: settings → supervised connections.

A connection is one Kite WebSocket (a listener thread), its pipeline and its Kafka producer. Whatever
fails on that thread is logged, counted and answered by rebuilding the pipeline and producer; a
connection that keeps failing gives up, and :meth:`Runtime.failure` says so, so that ``run`` can exit
non-zero for the container's restart policy instead of staying up and streaming nothing.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from connector.config import RunSettings
from connector.kite import Mode, OrderUpdate
from connector.logs import sample
from connector.metrics import Metrics, MetricsServer
from connector.pipeline import Inbox, Pipeline, TickCallback
from connector.reconcile import OrderBook, fetch_orders
from connector.serde import Serializers, build_serializers
from connector.sink import KafkaSink, SinkConfig, Topics, ensure_topics
from connector.source import KiteListener, TokenSource
from connector.spool import Entry, OrderLog, record_id
from connector.stats import Stats

__all__ = ["Callbacks", "Connection", "FailureBudget", "Reconciler", "Runtime", "topics_of"]

log = logging.getLogger("connector.runtime")
ORDER_LOG = "order_updates.wal"
LEGACY_SPOOL = "order_updates.jsonl"  # written at clean stops by versions before the order log
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


class Reconciler(threading.Thread):
    """Fetches Kite's order book after every (re)connect and every ``interval`` seconds; what the socket
    did not deliver goes to ``inbox``, which the listener thread publishes (it owns the producer)."""

    def __init__(
        self, settings: RunSettings, tokens: TokenSource, book: OrderBook, inbox: Inbox, stats: Stats
    ) -> None:
        super().__init__(name="kite-reconciler", daemon=True)
        self.settings, self.tokens, self.book, self.inbox, self.stats = settings, tokens, book, inbox, stats
        self._wake, self._stop = threading.Event(), threading.Event()
        self._log = sample(logging.getLogger("connector.reconcile"), interval=300)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self) -> None:
        interval = self.settings.order_reconcile_interval_seconds or None
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.reconcile()
            except Exception as exc:  # Kite unreachable, token expired, a bug: the next round tries again
                self.stats.reconcile_errors += 1
                self._log.error("order reconciliation failed: %s", exc, exc_info=not isinstance(exc, OSError))

    def reconcile(self) -> None:
        s, url = self.settings, self.settings.reconcile_url
        assert url is not None  # a reconciler exists only with one
        orders = fetch_orders(url, s.kite_api_key, self.tokens.get())
        missed = self.book.reconcile(orders.orders)
        self.inbox.extend(orders.malformed)
        self.inbox.extend(missed)
        if missed:
            log.warning("reconciliation: %d order updates the socket did not deliver", len(missed))


def open_order_log(spool_dir: Path) -> OrderLog:
    """The order log of ``spool_dir``, with what an older version spooled at its last stop moved in."""
    order_log = OrderLog(spool_dir / ORDER_LOG)
    legacy = spool_dir / LEGACY_SPOOL
    if legacy.exists():
        entries = []
        for line in legacy.read_text().splitlines():
            item = json.loads(line)
            value = base64.b64decode(item["value"])
            entries.append(Entry(item["key"].encode(), value, item["ts"], record_id(value)))
        order_log.append(entries)
        legacy.unlink()
        log.info("moved %d spooled order updates from %s into the order log", len(entries), legacy)
    return order_log


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
            tick_backlog=s.tick_backlog,
            client_id=f"kite-connector-{index}",
            producer_overrides=dict(s.producer_overrides),
        )
        self.sink: KafkaSink | None = None
        owns_orders = self.order_updates and runtime.kafka
        self.order_log = open_order_log(s.spool_path) if owns_orders and s.spool_path else None
        self.inbox: Inbox = deque()
        self.order_book = OrderBook() if self.order_updates and s.reconcile_url else None
        self.reconciler = (
            Reconciler(s, runtime.tokens, self.order_book, self.inbox, stats)
            if self.order_book is not None
            else None
        )
        self.subscribed = set(subscriptions)  # every token ever subscribed here (the listener adds to it)
        self.pipeline = self._assemble()
        self.listener = KiteListener(
            runtime.thread_name(index),
            s.kite_ws_url,
            s.kite_api_key,
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
        if event == "connect" and self.reconciler is not None:
            self.reconciler.wake()  # what happened while disconnected is only in the order book
        if self.runtime.callbacks.on_event is not None:
            self.runtime.callbacks.on_event(event, arg)

    def start(self) -> None:
        if self.reconciler is not None:
            self.reconciler.start()
        self.listener.start()

    def _assemble(self) -> Pipeline:
        """A new producer (replaying spooled order updates) and the pipeline that feeds it."""
        runtime, c = self.runtime, self.runtime.callbacks
        serializers = runtime.serializers
        if runtime.kafka:
            self.sink = KafkaSink(
                self.sink_config,
                self.stats,
                serializers.headers(),
                runtime.metrics.latency.observe,
                self.order_log,
            )
            self.sink.replay_order_log()
        return Pipeline(
            serializers,
            self.sink,
            self.stats,
            order_updates=self.order_updates,
            on_ticks=c.on_ticks,
            on_order_update=c.on_order_update,
            on_raw=c.on_raw,
            dead_letter_max_bytes=runtime.settings.dead_letter_max_bytes,
            order_book=self.order_book,
            inbox=self.inbox,
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
        self._retire_sink()
        self.pipeline = self._assemble()
        log.warning("connection %d rebuilt (pipeline and producer) after %s", self.index, type(exc).__name__)
        return self.pipeline

    def _retire_sink(self) -> None:
        """Flush what the old producer holds (briefly); its undelivered order updates stay in the log."""
        lost = self._close_sink(REBUILD_FLUSH_SECONDS)
        if lost:
            self.stats.abandoned += lost
            log.error("connection %d: %d records unacknowledged by the replaced producer", self.index, lost)
        self.stats.in_flight = 0

    def _close_sink(self, timeout: float) -> int:
        """Close the producer (flushing up to ``timeout``); the records it left unacknowledged."""
        sink, self.sink = self.sink, None
        if sink is None:
            return 0
        try:
            return sink.close(timeout)
        except Exception:  # a producer that failed may fail to close too; the rest must still close
            log.exception("connection %d: closing the producer failed", self.index)
            return self.stats.in_flight

    def close(self, timeout: float) -> int:
        """Flush (bounded) and close the producer and the order log; records left unacknowledged."""
        remaining = self._close_sink(timeout)
        if self.order_log is not None:
            self.order_log.close()
        return remaining

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
        thread_name: Callable[[int], str] = "kite-listener-{}".format,
    ) -> None:
        self.settings, self.shards, self.kafka = settings, shards, kafka
        self.thread_name = thread_name
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
                s.kafka_framing,
                s.schema_registry_url,
                self.topics.by_kind(),
                registry_timeout=s.schema_registry_timeout_seconds,
            )
        self.connections = [
            Connection(i, self, subscriptions, stats, FailureBudget(self.failure_limit, self._window()))
            for i, (subscriptions, stats) in enumerate(zip(self.shards, self.stats, strict=True))
        ]
        if s.metrics_port:
            self.metrics_server = MetricsServer(self.metrics, s.metrics_host, s.metrics_port)
            self.metrics_server.start()
        for connection in self.connections:
            connection.start()

    def _window(self) -> float:
        return self.settings.connection_failure_window_seconds

    def failure(self) -> str | None:
        return next((why for c in self.connections if (why := c.failure()) is not None), None)

    def stop(self) -> int:
        """Stop reading, flush (bounded), report; returns the number of records left unacknowledged."""
        t0 = time.monotonic()
        budget = self.settings.flush_timeout_seconds
        for c in self.connections:
            c.listener.stop()
            if c.reconciler is not None:
                c.reconciler.stop()
            if c.sink is not None:
                c.sink.stop()
        for c in self.connections:
            if c.listener is not threading.current_thread():  # stop() may come from a callback
                c.listener.join(timeout=budget / 4 + 5)
        remaining = 0
        for c in self.connections:
            remaining += c.close(max(0.1, budget - (time.monotonic() - t0)))
        for i, stats in enumerate(self.stats):
            log.info("connection %d final counts", i, extra={"fields": {"final": stats.summary()}})
        if remaining:
            log.error("%d records not acknowledged within FLUSH_TIMEOUT_SECONDS", remaining)
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None
        return remaining
