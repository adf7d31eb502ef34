"""The one assembly path of ``kite-connector run`` and the embedding API: settings → supervised threads.

Instruments are split into shards (up to 3000 each). A shard has one pipeline and one Kafka producer,
fed by its lines: ``KITE_LINES`` WebSockets, each subscribed to all of the shard's instruments, each on
its own listener thread; the shard's lock makes them take turns, and its arbiter lets the first copy of
a tick through. Order updates from every line meet at one :class:`OrderDesk`; a reconciler thread fills
in what the sockets missed; a metrics thread serves ``/metrics`` and ``/healthz``; a state thread keeps
the time of the last message, so that a gap across a restart is reported.

One :class:`Supervisor` watches every thread: what fails on a line rebuilds its shard's pipeline and
producer, a reconciler, metrics or state thread that raises is started again, and whatever keeps failing
or ends unasked makes :meth:`Runtime.failure` say so, so that ``run`` exits for its restart policy
instead of staying up and streaming nothing.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from connector.arbiter import new_arbiter
from connector.config import RunSettings
from connector.errors import ConfigError, SerializationError
from connector.gaps import GapWatch, market_open_during, read_last_received, write_last_received
from connector.ha import (
    ORDER_LOOKBACK_MS,
    HaCollector,
    HaCoordinator,
    HaSink,
    HaSinkConfig,
    HaStats,
    Ident,
    Lease,
    OrderWatcher,
    committed_consumer,
    dead_letter_ident,
    tick_ident,
)
from connector.kite import Mode, OrderUpdate
from connector.market import load_calendar
from connector.metrics import Metrics, MetricsServer
from connector.orders import OrderBook, OrderDesk, Reconciler, open_order_log
from connector.pipeline import Pipeline, TickCallback
from connector.serde import AvroReader, Serializers, build_serializers, registry_client
from connector.sink import KafkaSink, Sink, SinkConfig, TopicSpec, ensure_topics
from connector.source import KiteListener, LineGroup, TokenSource
from connector.stats import ConnectionStats, ShardStats
from connector.supervise import FailureBudget, SupervisedThread, Supervisor

__all__ = ["Callbacks", "Connection", "Runtime", "Shard"]

log = logging.getLogger("connector.runtime")
REBUILD_FLUSH_SECONDS = 5.0  # how long a failed producer may take to hand over what it still holds
PRODUCER_READY_SECONDS = 10.0  # at start, wait this long for every producer to have its producer id
LAST_RECEIVED = "last-received.json"  # beside the order log: when each shard last received anything


@dataclass(slots=True)
class Callbacks:
    """What an embedding application sees, called on a listener thread."""

    on_ticks: TickCallback | None = None
    on_order_update: Callable[[OrderUpdate], None] | None = None
    on_raw: Callable[[bool, bytes], None] | None = None
    on_event: Callable[[str, object], None] | None = None


class Connection:
    """One Kite WebSocket, a line of its shard, on its own listener thread (and its message handler)."""

    def __init__(
        self, index: int, shard: Shard, subscriptions: dict[int, Mode], stats: ConnectionStats
    ) -> None:
        self.index, self.shard, self.stats = index, shard, stats
        runtime, s = shard.runtime, shard.runtime.settings
        self.listener = KiteListener(
            runtime.thread_name(index),
            s.kite_ws_url,
            s.kite_api_key or "",
            runtime.tokens,
            subscriptions,
            self,
            stats,
            s.kite_watchdog_seconds,
            s.kite_reconnect_max_delay,
            drain_seconds=s.flush_timeout_seconds / 4,
            subscribed=shard.subscribed,
            on_event=self._on_event,
            supervisor=self._rebuild,
            group=shard.group,
        )

    # -- the listener's MessageHandler: the shard's pipeline, one line at a time ---------------------------
    def on_message(self, binary: bool, data: bytes, received_ms: int, received: float) -> None:
        shard = self.shard
        with shard.lock:
            shard.pipeline.on_message(binary, data, received_ms, received, self.stats)

    def service(self) -> float | None:
        with self.shard.lock:
            return self.shard.pipeline.service()

    def saturated(self) -> bool:
        return self.shard.pipeline.saturated()

    # -- events ------------------------------------------------------------------------------------------
    def _on_event(self, event: str, arg: object) -> None:
        runtime = self.shard.runtime
        if event == "connect" and runtime.reconciler is not None:
            runtime.reconciler.wake()  # what happened while disconnected is only in the order book
        elif event == "disconnect":
            self.shard.gaps.cause(f"connection {self.index}: {arg}")
        if runtime.callbacks.on_event is not None:
            runtime.callbacks.on_event(event, arg)

    def _rebuild(self, exc: Exception) -> Connection | None:
        return self if self.shard.rebuild(exc) else None


class Shard:
    """Instruments with one pipeline and one producer, carried by one or more lines (connections)."""

    def __init__(
        self,
        index: int,
        runtime: Runtime,
        subscriptions: dict[int, Mode],
        stats: ShardStats,
        lines: list[tuple[int, ConnectionStats]],
        last_received_ms: int | None,
    ) -> None:
        self.index, self.runtime, self.stats = index, runtime, stats
        s = runtime.settings
        self.lock = threading.RLock()  # re-entrant: a callback on a line may stop the runtime
        self.budget = FailureBudget(runtime.failure_limit, s.connection_failure_window_seconds)
        self.sink_config = SinkConfig.of(s, f"kite-connector-{index}")
        self.subscribed = set(subscriptions)  # every token ever subscribed here (the listeners add to it)
        self.arbiter = new_arbiter() if len(lines) > 1 else None
        self.group = LineGroup() if len(lines) > 1 else None
        tokens = lambda: sorted(self.subscribed)  # noqa: E731 - read when a gap ends, as it is then
        self.gaps = GapWatch(
            index,
            tokens,
            s.gap_threshold_seconds,
            market_open_during(runtime.calendar, tokens),
            last_received_ms,
        )
        self.sink: Sink | None = None
        self.pipeline = self._assemble()
        self.connections = [Connection(i, self, subscriptions, line) for i, line in lines]

    def _assemble(self) -> Pipeline:
        """A new producer (producing what the order log holds for nobody) and the pipeline that feeds it."""
        runtime, c = self.runtime, self.runtime.callbacks
        if runtime.ha_enabled:
            self.sink = self.sink or runtime.ha_sink(self.index, self.sink_config, self.stats)
        elif runtime.kafka:
            self.sink = KafkaSink(
                self.sink_config, self.stats, runtime.serializers.headers(), runtime.metrics.latency.observe
            )
            runtime.orders.attach(self.sink)
        s = runtime.settings
        return Pipeline(
            runtime.serializers,
            self.sink,
            self.stats,
            orders=runtime.orders,
            reconciled=self.index == 0,
            on_ticks=c.on_ticks,
            on_raw=c.on_raw,
            dead_letter_max_bytes=s.dead_letter_max_bytes,
            timestamp_window_ms=int(s.tick_timestamp_window_seconds * 1000),
            subscribed=self.subscribed,
            arbiter=self.arbiter,
            gaps=self.gaps if s.gap_threshold_seconds else None,
            tick_ids=runtime.ha_enabled,
        )

    def rebuild(self, exc: Exception) -> bool:
        """A line's supervisor: a new pipeline and producer; False once the budget is spent."""
        s = self.runtime.settings
        if not self.budget.spend():
            log.critical(
                "shard %d failed more than %d times in %.0f s (CONNECTION_FAILURE_LIMIT): giving up",
                self.index,
                s.connection_failure_limit,
                s.connection_failure_window_seconds,
            )
            return False
        with self.lock:
            self.pipeline.retire()
            if not self.runtime.ha_enabled:  # an HA sink outlives pipelines: its records are in its buffer
                lost = self._close_sink(REBUILD_FLUSH_SECONDS)
                if lost:
                    self.stats.abandoned += lost
                    log.error(
                        "shard %d: %d records unacknowledged by the replaced producer", self.index, lost
                    )
                self.stats.in_flight = 0
            self.pipeline = self._assemble()
        log.warning("shard %d rebuilt (pipeline and producer) after %s", self.index, type(exc).__name__)
        return True

    def wait_ready(self, deadline: float) -> bool:
        """Until the producer has its producer id (or ``deadline``): the first tick must not wait for it."""
        sink = self.sink
        while sink is not None and not sink.ready() and time.monotonic() < deadline:
            sink.producer.poll(0.05)
        return sink is None or sink.ready()

    def _close_sink(self, timeout: float) -> int:
        """Close the producer (flushing up to ``timeout``); the records it left unacknowledged."""
        sink, self.sink = self.sink, None
        if sink is None:
            return 0
        try:
            remaining = sink.close(timeout)
        except Exception:  # a producer that failed may fail to close too; the rest must still close
            log.exception("shard %d: closing the producer failed", self.index)
            remaining = self.stats.in_flight
        self.runtime.orders.detach(sink)
        return remaining

    def summary(self) -> dict[str, object]:
        """What the shard did, with what each of its lines saw: ``ticks`` are those it published."""
        lines = [c.stats for c in self.connections]
        return {
            "ticks": sum(line.ticks_won for line in lines),
            **self.stats.summary(),
            "connections": [line.summary() for line in lines],
        }

    def close(self, timeout: float) -> int:
        """Flush (bounded) and close the producer; records left unacknowledged."""
        with self.lock:
            self.pipeline.retire()
            if self.group is not None:
                self.group.close()
            return self._close_sink(timeout)


class Runtime:
    """Topics, serializers, order desk, shards and their lines, metrics and their threads."""

    def __init__(
        self,
        settings: RunSettings,
        shards: list[dict[int, Mode]],
        *,
        kafka: bool = True,
        callbacks: Callbacks | None = None,
        failure_limit: int | None = None,
        stats: list[ConnectionStats] | None = None,
        shard_stats: list[ShardStats] | None = None,
        metrics: Metrics | None = None,
        thread_name: Callable[[int], str] = "kite-listener-{}".format,
    ) -> None:
        self.settings, self.subscriptions, self.kafka = settings, shards, kafka
        self.thread_name = thread_name
        self.callbacks = callbacks or Callbacks()
        self.failure_limit = failure_limit
        self.tokens = TokenSource(settings.kite_access_token, settings.kite_access_token_file)
        self.calendar = load_calendar(settings.market.market_calendar_file)
        self.topics = SinkConfig.of(settings, "").topics
        self.supervisor = Supervisor(
            settings.connection_failure_limit, settings.connection_failure_window_seconds
        )
        lines = settings.kite_lines
        self.stats = stats or [ConnectionStats() for _ in range(len(shards) * lines)]
        self.shard_stats = shard_stats or [ShardStats() for _ in shards]
        self.metrics = metrics or Metrics(self.stats, self.shard_stats, lines)
        self.serializers: Serializers = build_serializers()
        self.orders = OrderDesk(None, self.topics.order_updates, [])  # the real one is built at start()
        self.shards: list[Shard] = []
        self.reconciler: Reconciler | None = None
        self.ha: HaCoordinator | None = None  # with HA_GROUP: this instance's part in the set
        self.ha_stats = HaStats()
        self._ha_sinks: list[HaSink] = []
        self._ha_threads: list[SupervisedThread] = []  # the HA sinks' own: stopped before the final commit
        self._threads: list[SupervisedThread] = []
        self._last_saved: dict[int, int] = {}
        self.metrics_server: MetricsServer | None = None

    @property
    def ha_enabled(self) -> bool:
        return self.kafka and self.settings.ha_group is not None

    @property
    def connections(self) -> list[Connection]:
        return [c for shard in self.shards for c in shard.connections]

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
        self.shards = self._build_shards()
        if self.ha_enabled:
            self.ha = self._ha_coordinator()
        self._wait_for_producers()
        if s.metrics_port:
            server = self.metrics_server = MetricsServer(self.metrics, s.metrics_host, s.metrics_port)
            self._threads.append(self.supervisor.spawn("metrics", server.serve))
        if self._last_received_path is not None:
            self._threads.append(self.supervisor.spawn("kite-state", self._keep_last_received))
        for thread in [*self._ha_threads, *self._threads]:
            thread.start()
        for connection in self.connections:
            self.supervisor.watch(connection.listener)
            connection.listener.start()

    def _build_shards(self) -> list[Shard]:
        lines = self.settings.kite_lines
        path = self._last_received_path
        earlier = read_last_received(path) if path is not None else {}
        return [
            Shard(
                i,
                self,
                subscriptions,
                self.shard_stats[i],
                [(i * lines + line, self.stats[i * lines + line]) for line in range(lines)],
                earlier.get(i),
            )
            for i, subscriptions in enumerate(self.subscriptions)
        ]

    def _wait_for_producers(self) -> None:
        deadline = time.monotonic() + PRODUCER_READY_SECONDS
        late = [shard.index for shard in self.shards if not shard.wait_ready(deadline)]
        if late:
            log.warning("producers of shards %s have no producer id yet: Kafka is slow to answer", late)

    @property
    def _last_received_path(self) -> Path | None:
        directory = self.settings.order_log_path
        return directory / LAST_RECEIVED if self.kafka and directory is not None else None

    def _keep_last_received(self, stop: threading.Event) -> None:
        """Every second, when each shard last received anything (for the gap across a restart)."""
        while not stop.wait(1.0):
            self._save_last_received()

    def _save_last_received(self) -> None:
        path = self._last_received_path
        last = {shard.index: ms for shard in self.shards if (ms := shard.gaps.last_ms) is not None}
        if path is not None and last and last != self._last_saved:
            write_last_received(path, last)
            self._last_saved = last

    def _prepare_kafka(self) -> None:
        """Topics created, schemas registered."""
        s = self.settings
        layout = s.layout
        specs = [TopicSpec(t, layout.topic_partitions, layout.replication_factor) for t in self.topics.all()]
        written = list(self.topics.all())
        read: list[str] = []
        groups: list[str] = []
        if s.ha_group is not None:  # the lease is read, never written; a takeover reads the topics' tail
            specs.append(TopicSpec(s.ha_lease_topic, 1, layout.replication_factor))
            read, groups = [*written, s.ha_lease_topic], [_lease_group(s.ha_group)]
        meta = ensure_topics(s.kafka.client_config(), specs, read=read, groups=groups, write=written)
        lease = meta.topics.get(s.ha_lease_topic) if s.ha_group is not None else None
        if lease is not None and len(lease.partitions) != 1:
            raise ConfigError(
                f"HA_LEASE_TOPIC {s.ha_lease_topic} has {len(lease.partitions)} partitions: the lease "
                "needs a topic of one partition (delete it, or name another)"
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

    def ha_sink(self, shard: int, config: SinkConfig, stats: ShardStats) -> HaSink:
        """A shard's sink in an HA set (standby until the lease is this instance's)."""
        s = self.settings
        ha = HaSinkConfig(
            config,
            f"kite-connector.{s.ha_group}.{shard}",
            s.ha_instance,
            s.ha_commit_interval_ms / 1000,
            s.ha_buffer_seconds,
            s.ha_buffer_max_bytes,
        )
        sink = HaSink(
            shard,
            ha,
            stats,
            self.ha_stats,
            self.serializers.headers(),
            self._dead_letter_ident,
            self.metrics.latency.observe,
        )
        self._ha_sinks.append(sink)
        self._ha_threads.append(self.supervisor.spawn(f"ha-producer-{shard}", sink.run))
        return sink

    @functools.cached_property
    def _dead_letter_ident(self) -> Callable[[bytes], Ident | None]:
        """A dead letter's value → its ident (the digest of the input it kept), both written and read back;
        one reader (its schemas parsed once) serves every shard's HA sink and the takeover."""
        registry = self.settings.registry
        reader = AvroReader(registry.client_config() if registry.url else None)  # authenticated as the writer
        topic = self.topics.dead_letters

        def ident(value: bytes) -> Ident | None:
            try:
                return dead_letter_ident(topic, reader.read(value)[1])
            except SerializationError:
                return None

        return ident

    def _ha_coordinator(self) -> HaCoordinator:
        """The lease, the consumers reading back what is committed, and the thread that drives them."""
        s, topics = self.settings, self.topics
        client, instance = s.kafka.client_config(), s.ha_instance
        lease = Lease(
            client, _lease_group(s.ha_group or ""), s.ha_lease_topic, s.ha_session_timeout_ms, instance
        )
        watcher = OrderWatcher(
            committed_consumer(client, f"kite-connector-ha-orders-{instance}"), topics.order_updates
        )
        since = self.orders.unsent_since_ms() or time.time_ns() // 1_000_000
        watcher.start(since - ORDER_LOOKBACK_MS)
        dead_letter = self._dead_letter_ident
        checked = {
            topics.ticks: lambda msg: tick_ident(topics.ticks, msg.key() or b"", msg.headers()),
            topics.dead_letters: lambda msg: dead_letter(msg.value() or b""),
        }
        tail = committed_consumer(client, f"kite-connector-ha-tail-{instance}")
        coordinator = HaCoordinator(
            lease, self._ha_sinks, self.orders, self.ha_stats, tail, checked, topics.order_updates, watcher
        )
        self._threads.append(self.supervisor.spawn("ha-lease", coordinator.run))
        self.supervisor.watch(coordinator)
        self.metrics.registry.register(HaCollector(self.ha_stats, self._ha_sinks))
        self.metrics.role = coordinator.role
        return coordinator

    def failure(self) -> str | None:
        """Why the process no longer does its work (a thread gave up or ended unasked), or None."""
        return self.supervisor.failure()

    def stop(self) -> int:
        """Stop reading, flush (bounded), report; returns the number of records left unacknowledged."""
        t0 = time.monotonic()
        budget = self.settings.flush_timeout_seconds
        for c in self.connections:
            c.listener.stop()
        for shard in self.shards:
            if shard.sink is not None:
                shard.sink.stop()
        for thread in self._threads:
            thread.stop()
        if self.reconciler is not None:
            self.reconciler.wake()
        for c in self.connections:
            if c.listener.ident is not None and c.listener is not threading.current_thread():
                c.listener.join(timeout=budget / 4 + 5)  # stop() may come from a callback on it
        self._save_last_received()
        for thread in self._ha_threads:  # an HA sink's final commit is made on this thread
            thread.stop()
            thread.join(budget / 4 + 5)
        remaining = 0
        for shard in self.shards:
            remaining += shard.close(max(0.1, budget - (time.monotonic() - t0)))
        if self.ha is not None:
            self.ha.close()  # committed: leave the lease's group, for a standby to take over at once
        self.orders.close()
        for shard in self.shards:
            log.info("shard %d final counts", shard.index, extra={"fields": {"final": shard.summary()}})
        if remaining:
            log.error("%d records not acknowledged within FLUSH_TIMEOUT_SECONDS", remaining)
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None
        for thread in self._threads:
            thread.join(1)
        return remaining


def _lease_group(ha_group: str) -> str:
    """The consumer group whose one partition is an HA set's lease."""
    return f"kite-connector.ha.{ha_group}"
