"""``kite-connector run``: wiring, lifecycle and signals. Everything else lives in its own module."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any

from connector.errors import ConfigError
from connector.instruments import Instruments, parse_instruments, read_instruments
from connector.kite import MAX_TOKENS_PER_CONNECTION, Mode
from connector.metrics import Metrics, MetricsServer
from connector.pipeline import Pipeline
from connector.serde import build_serializers
from connector.sink import KafkaSink, SinkConfig, Topics, ensure_topics
from connector.source import KiteListener, TokenSource, redact
from connector.stats import Stats

__all__ = ["MAX_CONNECTIONS", "Connector", "download_instruments", "parse_subscriptions", "shard"]

log = logging.getLogger("connector.app")
MAX_CONNECTIONS = 3  # Kite allows three WebSocket connections per api_key


def download_instruments(url: str, api_key: str, token: str) -> Instruments:
    """Kite's instruments dump (or the simulator's), fetched with the session's credentials."""
    request = urllib.request.Request(
        url, headers={"X-Kite-Version": "3", "Authorization": f"token {api_key}:{token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise ConfigError(f"cannot download KITE_INSTRUMENTS_URL: {redact(str(exc), token)}") from exc
    return Instruments(parse_instruments(text, url))


def parse_subscriptions(
    spec: str | None, default_mode: str, instruments: Instruments | None
) -> dict[int, Mode]:
    """``"256265@ltp,NSE:INFY,NFO:NIFTY25DECFUT@full"`` → token → mode."""
    if not spec or not spec.strip():
        raise ConfigError(
            "KITE_INSTRUMENTS is empty: name instrument tokens or EXCHANGE:TRADINGSYMBOL entries"
        )
    subscriptions: dict[int, Mode] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, _, mode = item.partition("@")
        if mode and mode not in set(Mode):
            raise ConfigError(f"KITE_INSTRUMENTS entry {item!r}: mode must be ltp, quote or full")
        if name.isdigit():
            token = int(name)
        elif instruments is None:
            raise ConfigError(
                f"KITE_INSTRUMENTS entry {item!r} needs KITE_INSTRUMENTS_FILE or KITE_INSTRUMENTS_URL"
            )
        else:
            token = instruments.resolve(name)
        subscriptions[token] = Mode(mode or default_mode)
    return subscriptions


def shard(subscriptions: dict[int, Mode]) -> list[dict[int, Mode]]:
    """Split over connections of at most 3000 instruments; more than three connections is an error."""
    items = list(subscriptions.items())
    shards = [
        dict(items[i : i + MAX_TOKENS_PER_CONNECTION])
        for i in range(0, len(items), MAX_TOKENS_PER_CONNECTION)
    ]
    if len(shards) > MAX_CONNECTIONS:
        limit = MAX_CONNECTIONS * MAX_TOKENS_PER_CONNECTION
        raise ConfigError(
            f"{len(items)} instruments subscribed; Kite allows {limit} per api_key "
            f"({MAX_CONNECTIONS} connections of {MAX_TOKENS_PER_CONNECTION})"
        )
    return shards


class Connector:
    """The whole runtime: one listener thread, pipeline and producer per connection, plus metrics."""

    def __init__(self, v: dict[str, Any]) -> None:
        if not v["KITE_API_KEY"]:
            raise ConfigError("KITE_API_KEY is not set")
        self.v = v
        self.tokens = TokenSource(v["KITE_ACCESS_TOKEN"], v["KITE_ACCESS_TOKEN_FILE"])
        instruments = None
        if v["KITE_INSTRUMENTS_URL"]:
            instruments = download_instruments(
                v["KITE_INSTRUMENTS_URL"], v["KITE_API_KEY"], self.tokens.get()
            )
        elif v["KITE_INSTRUMENTS_FILE"]:
            instruments = Instruments(read_instruments(v["KITE_INSTRUMENTS_FILE"]))
        self.shards = shard(parse_subscriptions(v["KITE_INSTRUMENTS"], v["KITE_MODE"], instruments))
        self.topics = Topics(
            v["KAFKA_TOPIC_TICKS"], v["KAFKA_TOPIC_ORDER_UPDATES"], v["KAFKA_TOPIC_DEAD_LETTERS"]
        )
        self.sink_configs = [self._sink_config(i) for i in range(len(self.shards))]  # validated here
        self.stats = [Stats() for _ in self.shards]
        self.metrics = Metrics(self.stats)
        self.sinks: list[KafkaSink] = []
        self.listeners: list[KiteListener] = []

    def _sink_config(self, index: int) -> SinkConfig:
        v = self.v
        spool = Path(v["SPOOL_DIR"]) / "order_updates.jsonl" if v["SPOOL_DIR"] and index == 0 else None
        return SinkConfig(
            bootstrap_servers=v["KAFKA_BOOTSTRAP_SERVERS"],
            topics=self.topics,
            max_in_flight=v["MAX_IN_FLIGHT"],
            low_water=v["LOW_WATER_MARK"],
            policy=v["BACKPRESSURE_POLICY"],
            compression=v["KAFKA_COMPRESSION"],
            linger_ms=v["KAFKA_LINGER_MS"],
            delivery_timeout_ms=v["KAFKA_DELIVERY_TIMEOUT_MS"],
            spool_path=spool,
            client_id=f"kite-connector-{index}",
        )

    def start(self) -> None:
        v = self.v
        ensure_topics(
            v["KAFKA_BOOTSTRAP_SERVERS"],
            self.topics,
            v["KAFKA_TOPIC_PARTITIONS"],
            v["KAFKA_REPLICATION_FACTOR"],
        )
        serializers = build_serializers(v["KAFKA_FRAMING"], v["SCHEMA_REGISTRY_URL"], self.topics.by_kind())
        headers = serializers.headers()
        for i, (subscriptions, stats) in enumerate(zip(self.shards, self.stats, strict=True)):
            sink = KafkaSink(self.sink_configs[i], stats, headers, self.metrics.latency.observe)
            if i == 0:
                sink.replay_spool()
            pipeline = Pipeline(serializers, sink, stats, order_updates=(i == 0))
            listener = KiteListener(
                f"kite-listener-{i}",
                v["KITE_WS_URL"],
                v["KITE_API_KEY"],
                self.tokens,
                subscriptions,
                pipeline,
                stats,
                v["KITE_WATCHDOG_SECONDS"],
                v["KITE_RECONNECT_MAX_DELAY"],
            )
            self.sinks.append(sink)
            self.listeners.append(listener)
        if v["METRICS_PORT"]:
            self.metrics_server: MetricsServer | None = MetricsServer(
                self.metrics, v["METRICS_HOST"], v["METRICS_PORT"]
            )
            self.metrics_server.start()
        else:
            self.metrics_server = None
        for listener in self.listeners:
            listener.start()
        log.info(
            "streaming %d instruments over %d connection(s) to %s",
            sum(map(len, self.shards)),
            len(self.shards),
            v["KAFKA_BOOTSTRAP_SERVERS"],
        )

    def stop(self) -> int:
        """Stop reading, flush (bounded), report; returns the number of records left unacknowledged."""
        t0 = time.monotonic()
        for listener, sink in zip(self.listeners, self.sinks, strict=True):
            listener.stop()
            sink.stop()
        for listener in self.listeners:
            listener.join(timeout=5)
        budget = self.v["FLUSH_TIMEOUT_SECONDS"]
        remaining = sum(sink.close(max(0.1, budget - (time.monotonic() - t0))) for sink in self.sinks)
        for i, stats in enumerate(self.stats):
            log.info("connection %d final counts", i, extra={"fields": {"final": stats.summary()}})
        if remaining:
            log.error("%d records not acknowledged within FLUSH_TIMEOUT_SECONDS", remaining)
        if self.metrics_server is not None:
            self.metrics_server.close()
        return remaining

    def run_until_signalled(self) -> int:
        """Run until SIGTERM/SIGINT; a second signal exits at once."""
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if stop.is_set():
                log.warning("second signal: exiting without flushing")
                os._exit(1)
            log.info("%s: stopping", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        while not stop.wait(1):
            pass
        self.stop()
        return 0
