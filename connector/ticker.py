"""Use the connector from Python, the way the official ``KiteTicker`` is used, with Kafka on top.

Callbacks keep the official client's names and arguments and run on the listener thread, the same
thread (and the same code) that ``kite-connector run`` uses; connecting again after ``close()`` works.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connector.config import KafkaClient, RunSettings
from connector.errors import ConnectorError
from connector.kite import Mode, OrderUpdate, Tick
from connector.metrics import Metrics
from connector.runtime import Callbacks, Runtime
from connector.sink import Topics
from connector.source import KiteListener
from connector.stats import ConnectionStats, ShardStats

__all__ = ["KafkaOutput", "KiteTicker"]

log = logging.getLogger("connector.ticker")
Callback = Callable[..., Any]


def _default(env: str) -> Any:
    return next(s.default for s in RunSettings.declared() if s.env == env)


# KafkaOutput field → the run setting it is (its default is that setting's).
_FIELDS = {
    "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "policy": "BACKPRESSURE_POLICY",
    "max_in_flight": "MAX_IN_FLIGHT",
    "framing": "KAFKA_FRAMING",
    "schema_registry_url": "SCHEMA_REGISTRY_URL",
    "partitions": "KAFKA_TOPIC_PARTITIONS",
    "replication_factor": "KAFKA_REPLICATION_FACTOR",
    "flush_timeout": "FLUSH_TIMEOUT_SECONDS",
    "order_log_dir": "ORDER_LOG_DIR",
    "metrics_port": "METRICS_PORT",
}


@dataclass(frozen=True, slots=True)
class KafkaOutput:
    """Where and how a :class:`KiteTicker` also writes what it receives: ``kite-connector run``'s settings.

    The common ones are fields (each is the run setting named in ``_FIELDS``, with its default). Any
    other run setting goes in ``settings`` by its variable name, as text, and is parsed and checked as
    ``run`` checks it: ``settings={"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_LINGER_MS": "5"}``.
    ``order_log_dir`` keeps order updates Kafka has not acknowledged across restarts; None: memory only.
    ``client_overrides`` go to every Kafka client of the ticker, last: librdkafka properties or callbacks
    that only Python can give, such as an ``oauth_cb`` returning (token, expiry) for Amazon MSK IAM.
    """

    bootstrap_servers: str
    topics: Topics = field(default_factory=Topics)
    policy: str = _default("BACKPRESSURE_POLICY")
    max_in_flight: int = _default("MAX_IN_FLIGHT")
    framing: str = _default("KAFKA_FRAMING")
    schema_registry_url: str | None = _default("SCHEMA_REGISTRY_URL")
    partitions: int = _default("KAFKA_TOPIC_PARTITIONS")
    replication_factor: int = _default("KAFKA_REPLICATION_FACTOR")
    flush_timeout: float = _default("FLUSH_TIMEOUT_SECONDS")
    order_log_dir: str | None = _default("ORDER_LOG_DIR")
    metrics_port: int = 0  # an embedded ticker serves no HTTP unless asked (run's default is 9100)
    settings: Mapping[str, str] = field(default_factory=dict)
    producer_overrides: dict[str, str] = field(default_factory=dict)
    client_overrides: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def environment(self) -> dict[str, str]:
        """These fields and ``settings`` as run settings' text values."""
        values = {env: getattr(self, name) for name, env in _FIELDS.items()}
        values |= {
            "KAFKA_TOPIC_TICKS": self.topics.ticks,
            "KAFKA_TOPIC_ORDER_UPDATES": self.topics.order_updates,
            "KAFKA_TOPIC_DEAD_LETTERS": self.topics.dead_letters,
        }
        return {**self.settings, **{k: str(v) for k, v in values.items() if v is not None}}


class KiteTicker:
    """Drop-in for ``kiteconnect.KiteTicker``: set the ``on_*`` attributes, then :meth:`connect`.

    Ticks reach ``on_ticks`` as :class:`connector.kite.Tick` records; ``tick.to_kiteconnect()`` gives the
    official client's dict, or pass ``as_dicts=True`` to receive those dicts directly (times are
    timezone-aware UTC there, the one deliberate difference). A callback that raises is logged with its
    traceback and counted in :attr:`callback_errors`; the stream goes on. Callbacks run on the listener
    thread: a slow callback slows reading (see ``metrics.callback_seconds``).

    It is built by the same runtime as ``kite-connector run`` (topics, order log, supervision; metrics when
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
        environment = kafka.environment() if kafka else {}
        overrides = dict(kafka.client_overrides) if kafka else {}
        self.settings = RunSettings.load(
            None,
            environment,
            kafka=KafkaClient.load(None, environment, overrides=overrides),
            kite_api_key=api_key,
            kite_access_token=access_token,
            kite_access_token_file=access_token_file,
            kite_ws_url=self.root,
            kite_watchdog_seconds=watchdog,
            kite_reconnect_max_delay=reconnect_max_delay,
            kite_api_url=kite_api_url,
            order_log_dir=kafka.order_log_dir if kafka else None,
            metrics_port=kafka.metrics_port if kafka else 0,
            producer_overrides=kafka.producer_overrides if kafka else {},
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
        self.stats, self.kafka_stats = ConnectionStats(), ShardStats()  # the WebSocket's; Kafka output's
        self.metrics = Metrics([self.stats], [self.kafka_stats])
        self.callback_errors = 0
        self._runtime: Runtime | None = None
        self._done = threading.Event()
        self._died: str | None = None  # what ended the listener thread, if not close()

    @property
    def _listener(self) -> KiteListener | None:
        return self._runtime.connections[0].listener if self._runtime and self._runtime.connections else None

    # -- lifecycle -------------------------------------------------------------------------------------
    def connect(self, threaded: bool = False, **_: Any) -> None:
        """Start the listener thread; with ``threaded=False``, also wait here until :meth:`close`."""
        if self._listener is not None and self._listener.is_alive():
            raise ConnectorError("already connected: call close() first")
        self._done.clear()
        self._died = None
        callbacks = Callbacks(self._deliver_ticks, self._deliver_order, self._deliver_raw, self._on_event)
        self._runtime = Runtime(
            self.settings,
            [self.subscribed_tokens],
            kafka=self.kafka is not None,
            callbacks=callbacks,
            stats=[self.stats],
            shard_stats=[self.kafka_stats],
            metrics=self.metrics,
            thread_name=lambda index: "kite-ticker",
        )
        self._runtime.start()
        if not threaded:
            try:
                while not self._done.wait(0.5):
                    if (why := self.failure()) is not None:
                        self._call("on_error", 0, why)
                        self.close()
                        raise ConnectorError(why)
            except KeyboardInterrupt:
                self.close()
            if self._died is not None:
                raise ConnectorError(f"the listener thread died: {self._died}")

    def failure(self) -> str | None:
        """Why the ticker no longer streams (a thread gave up or died), or None: for ``threaded=True``."""
        return self._runtime.failure() if self._runtime is not None else self._died

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
        elif event == "died":  # the thread is gone: say so, and let connect() return
            self._died = str(arg)
            self._call("on_error", 0, f"listener thread died: {arg}")
            self._call("on_noreconnect")
            self._done.set()
