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

from connector.config import RunSettings
from connector.errors import ConnectorError
from connector.kite import Mode, OrderUpdate, Tick
from connector.metrics import Metrics
from connector.runtime import Callbacks, Runtime
from connector.sink import Topics
from connector.source import KiteListener
from connector.stats import Stats

__all__ = ["KafkaOutput", "KiteTicker"]

log = logging.getLogger("connector.ticker")
Callback = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class KafkaOutput:
    """Where and how a :class:`KiteTicker` also writes what it receives (same as ``kite-connector run``).

    ``spool_dir`` keeps order updates Kafka has not acknowledged across restarts, as ``run`` does; the
    other fields are those of the run settings of the same names (see :class:`RunSettings`).
    """

    bootstrap_servers: str
    topics: Topics = field(default_factory=Topics)
    policy: str = "block"
    max_in_flight: int = 50_000
    framing: str = "single-object"
    schema_registry_url: str | None = None
    partitions: int = 6
    replication_factor: int = 1
    flush_timeout: float = 10.0
    spool_dir: str | None = "spool"
    metrics_port: int = 0
    producer_overrides: dict[str, str] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        """These fields as :class:`RunSettings` keyword arguments."""
        return {
            "kafka_bootstrap_servers": self.bootstrap_servers,
            "kafka_topic_ticks": self.topics.ticks,
            "kafka_topic_order_updates": self.topics.order_updates,
            "kafka_topic_dead_letters": self.topics.dead_letters,
            "backpressure_policy": self.policy,
            "max_in_flight": self.max_in_flight,
            "kafka_framing": self.framing,
            "schema_registry_url": self.schema_registry_url,
            "kafka_topic_partitions": self.partitions,
            "kafka_replication_factor": self.replication_factor,
            "flush_timeout_seconds": self.flush_timeout,
            "spool_dir": self.spool_dir,
            "metrics_port": self.metrics_port,
            "producer_overrides": self.producer_overrides,
        }


class KiteTicker:
    """Drop-in for ``kiteconnect.KiteTicker``: set the ``on_*`` attributes, then :meth:`connect`.

    Ticks reach ``on_ticks`` as :class:`connector.kite.Tick` records; ``tick.to_kiteconnect()`` gives the
    official client's dict, or pass ``as_dicts=True`` to receive those dicts directly (times are
    timezone-aware UTC there, the one deliberate difference). A callback that raises is logged with its
    traceback and counted in :attr:`callback_errors`; the stream goes on. Callbacks run on the listener
    thread: a slow callback slows reading (see ``metrics.callback_seconds``).

    It is built by the same runtime as ``kite-connector run`` (topics, spool, supervision; metrics when
    ``kafka.metrics_port`` is set): an unexpected error on the listener thread is reported to
    ``on_error`` and the connection is rebuilt, following ``reconnect`` and ``reconnect_max_tries``.
    Order updates the socket missed are fetched from Kite's order book (``kite_api_url``, by default Kite's
    own when ``root`` is) after every connect and reach ``on_order_update`` too.
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
        kite_api_url: str | None = None,
    ) -> None:
        self.api_key, self.root = api_key, root or self.ROOT_URI
        self.reconnect, self.reconnect_max_tries, self.reconnect_max_delay = (
            reconnect,
            reconnect_max_tries,
            reconnect_max_delay,
        )
        self.as_dicts, self.kafka = as_dicts, kafka
        self.settings = RunSettings(
            kite_api_key=api_key,
            kite_access_token=access_token,
            kite_access_token_file=access_token_file,
            kite_ws_url=self.root,
            kite_watchdog_seconds=watchdog,
            kite_reconnect_max_delay=reconnect_max_delay,
            kite_api_url=kite_api_url,
            **(kafka.settings() if kafka else {"spool_dir": None, "metrics_port": 0}),
        )
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
        self._runtime: Runtime | None = None
        self._done = threading.Event()

    @property
    def _listener(self) -> KiteListener | None:
        return self._runtime.connections[0].listener if self._runtime and self._runtime.connections else None

    # -- lifecycle -------------------------------------------------------------------------------------
    def connect(self, threaded: bool = False, **_: Any) -> None:
        """Start the listener thread; with ``threaded=False``, also wait here until :meth:`close`."""
        if self._listener is not None and self._listener.is_alive():
            raise ConnectorError("already connected: call close() first")
        self._done.clear()
        callbacks = Callbacks(self._deliver_ticks, self._deliver_order, self._deliver_raw, self._on_event)
        self._runtime = Runtime(
            self.settings,
            [self.subscribed_tokens],
            kafka=self.kafka is not None,
            callbacks=callbacks,
            stats=[self.stats],
            metrics=self.metrics,
            thread_name=lambda index: "kite-ticker",
        )
        self._runtime.start()
        if not threaded:
            try:
                while not self._done.wait(0.5):
                    pass
            except KeyboardInterrupt:
                self.close()

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Stop reading, flush Kafka output (bounded), and end the listener thread."""
        if self._runtime is not None:
            self._runtime.stop()
            self._runtime = None
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

    # -- plumbing ----------------------------------------------------------------------------------------
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
