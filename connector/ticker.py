"""Use the connector from Python, the way the official ``KiteTicker`` is used, with Kafka on top.

Callbacks keep the official client's names and arguments and run on the listener thread, the same
thread (and the same code) that ``kite-connector run`` uses; connecting again after ``close()`` works.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from connector.errors import ConnectorError
from connector.kite import Mode, OrderUpdate, Tick
from connector.metrics import Metrics
from connector.pipeline import Pipeline
from connector.serde import Serializers, build_serializers
from connector.sink import KafkaSink, SinkConfig, Topics, ensure_topics
from connector.source import KiteListener, TokenSource
from connector.stats import Stats

__all__ = ["KafkaOutput", "KiteTicker"]

log = logging.getLogger("connector.ticker")
Callback = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class KafkaOutput:
    """Where and how a :class:`KiteTicker` also writes what it receives (same as ``kite-connector run``)."""

    bootstrap_servers: str
    topics: Topics = field(default_factory=Topics)
    policy: str = "block"
    max_in_flight: int = 50_000
    framing: str = "single-object"
    schema_registry_url: str | None = None
    partitions: int = 6
    replication_factor: int = 1
    flush_timeout: float = 10.0
    producer_overrides: dict[str, str] = field(default_factory=dict)


class KiteTicker:
    """Drop-in for ``kiteconnect.KiteTicker``: set the ``on_*`` attributes, then :meth:`connect`.

    Ticks reach ``on_ticks`` as :class:`connector.kite.Tick` records; ``tick.to_kiteconnect()`` gives the
    official client's dict, or pass ``as_dicts=True`` to receive those dicts directly (times are
    timezone-aware UTC there, the one deliberate difference). A callback that raises is logged with its
    traceback and counted in :attr:`callback_errors`; the stream goes on. Callbacks run on the listener
    thread: a slow callback slows reading (see ``metrics.callback_seconds``).
    """

    MODE_LTP, MODE_QUOTE, MODE_FULL = "ltp", "quote", "full"
    ROOT_URI = "wss://ws.kite.trade"

    def __init__(
        self,
        api_key: str,
        access_token: str | None = None,
        debug: bool = False,
        root: str | None = None,
        reconnect: bool = True,
        reconnect_max_tries: int | None = None,
        reconnect_max_delay: float = 30.0,
        *,
        access_token_file: str | None = None,
        watchdog: float = 10.0,
        as_dicts: bool = False,
        kafka: KafkaOutput | None = None,
    ) -> None:
        self.api_key, self.root = api_key, root or self.ROOT_URI
        self.tokens = TokenSource(access_token, access_token_file)
        self.reconnect, self.reconnect_max_tries, self.reconnect_max_delay = (
            reconnect,
            reconnect_max_tries,
            reconnect_max_delay,
        )
        self.watchdog, self.as_dicts, self.kafka = watchdog, as_dicts, kafka
        if debug:
            logging.getLogger("connector").setLevel(logging.DEBUG)
        self.on_ticks: Callback | None = None
        self.on_connect: Callback | None = None
        self.on_close: Callback | None = None
        self.on_error: Callback | None = None
        self.on_reconnect: Callback | None = None
        self.on_noreconnect: Callback | None = None
        self.on_order_update: Callback | None = None
        self.on_message: Callback | None = None
        self.subscribed_tokens: dict[int, Mode] = {}
        self.stats = Stats()
        self.metrics = Metrics([self.stats])
        self.callback_errors = 0
        self._listener: KiteListener | None = None
        self._sink: KafkaSink | None = None
        self._done = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------------
    def connect(self, threaded: bool = False, **_: Any) -> None:
        """Start the listener thread; with ``threaded=False``, also wait here until :meth:`close`."""
        if self._listener is not None and self._listener.is_alive():
            raise ConnectorError("already connected: call close() first")
        self._done.clear()
        serializers = self._serializers()
        self._sink = self._make_sink(serializers)
        pipeline = Pipeline(
            serializers,
            self._sink,
            self.stats,
            on_ticks=self._deliver_ticks,
            on_order_update=self._deliver_order,
            on_raw=self._deliver_raw,
        )
        self._listener = KiteListener(
            "kite-ticker",
            self.root,
            self.api_key,
            self.tokens,
            self.subscribed_tokens,
            pipeline,
            self.stats,
            self.watchdog,
            self.reconnect_max_delay,
            on_event=self._on_event,
        )
        self._listener.start()
        if not threaded:
            try:
                while not self._done.wait(0.5):
                    pass
            except KeyboardInterrupt:
                self.close()

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Stop reading, flush Kafka output (bounded), and end the listener thread."""
        listener, sink = self._listener, self._sink
        if listener is not None:
            listener.stop()
            if sink is not None:
                sink.stop()
            if threading.current_thread() is not listener:
                listener.join(10)
        if sink is not None:
            sink.close(self.kafka.flush_timeout if self.kafka else 10.0)
            self._sink = None
        self._done.set()

    stop = close

    def is_connected(self) -> bool:
        return self.stats.connected

    # -- subscriptions ---------------------------------------------------------------------------------
    def subscribe(self, instrument_tokens: Iterable[int]) -> bool:
        """Subscribe (in quote mode, as Kite does, unless already subscribed in another mode)."""
        new = {int(t): self.subscribed_tokens.get(int(t), Mode.QUOTE) for t in instrument_tokens}
        return self._send(new)

    def unsubscribe(self, instrument_tokens: Iterable[int]) -> bool:
        tokens = [int(t) for t in instrument_tokens]
        for token in tokens:
            self.subscribed_tokens.pop(token, None)
        if self._listener is not None:
            self._listener.send_subscriptions({}, unsubscribe=tokens)
        return True

    def set_mode(self, mode: str, instrument_tokens: Iterable[int]) -> bool:
        return self._send({int(t): Mode(mode) for t in instrument_tokens})

    def _send(self, subscriptions: dict[int, Mode]) -> bool:
        self.subscribed_tokens.update(subscriptions)
        if self._listener is not None:
            self._listener.send_subscriptions(subscriptions)
        return True

    # -- plumbing --------------------------------------------------------------------------------------
    def _serializers(self) -> Serializers:
        k = self.kafka
        if k is None:
            return build_serializers()
        return build_serializers(k.framing, k.schema_registry_url, k.topics.by_kind())

    def _make_sink(self, serializers: Serializers) -> KafkaSink | None:
        k = self.kafka
        if k is None:
            return None
        ensure_topics(k.bootstrap_servers, k.topics, k.partitions, k.replication_factor)
        config = SinkConfig(
            k.bootstrap_servers,
            k.topics,
            k.max_in_flight,
            policy=k.policy,
            client_id="kite-ticker",
            producer_overrides=k.producer_overrides,
        )
        return KafkaSink(config, self.stats, serializers.headers(), self.metrics.latency.observe)

    def _call(self, name: str, *args: Any) -> None:
        callback = getattr(self, name)
        if callback is None:
            return
        started = time.perf_counter()
        try:
            callback(self, *args)
        except Exception:
            self.callback_errors += 1
            self.stats.callback_errors += 1
            log.exception(
                "%s raised; the stream goes on (callback errors so far: %d)", name, self.callback_errors
            )
        finally:
            self.metrics.callback_seconds.labels(name).observe(time.perf_counter() - started)

    def _deliver_ticks(self, ticks: list[Tick]) -> None:
        self._call("on_ticks", [t.to_kiteconnect() for t in ticks] if self.as_dicts else ticks)

    def _deliver_order(self, update: OrderUpdate) -> None:
        self._call("on_order_update", update.to_kiteconnect() if self.as_dicts else update)

    def _deliver_raw(self, binary: bool, data: bytes) -> None:
        self._call("on_message", data, binary)

    def _on_event(self, event: str, arg: object) -> None:
        if event == "connect":
            self._call("on_connect", None)
        elif event == "disconnect":
            self._call("on_close", 1006, str(arg))
        elif event == "error":
            code, reason = arg if isinstance(arg, tuple) else (0, str(arg))
            self._call("on_error", code, reason)
        elif event == "reconnect":
            attempts = int(arg) if isinstance(arg, int) else 0
            if not self.reconnect or (
                self.reconnect_max_tries is not None and attempts > self.reconnect_max_tries
            ):
                self._call("on_noreconnect")
                if self._listener is not None:
                    self._listener.stop()
                self._done.set()
                return
            self._call("on_reconnect", attempts)
        elif event == "close":
            self._call("on_close", 1000, "closed by client")
