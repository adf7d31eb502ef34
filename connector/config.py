"""Configuration in one place: every setting is an environment variable and a CLI flag of the same name.

``KITE_API_KEY`` is also ``--kite-api-key``; a flag wins over the environment, the environment over the
default. Values are parsed and checked at start-up; a bad one stops the process with a message naming
the variable. Secret values are never echoed back, in errors or anywhere else.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from connector.errors import ConfigError

__all__ = [
    "MARKET_SETTINGS",
    "RUN_SETTINGS",
    "SIMULATOR_SETTINGS",
    "RunSettings",
    "Setting",
    "add_arguments",
    "check_ws_url",
    "resolve",
]


def flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be 1 or more")
    return value


def check_ws_url(url: str) -> None:
    """A ConfigError naming KITE_WS_URL unless ``url`` is a ws:// or wss:// URL with a host."""
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("ws", "wss") and bool(parts.hostname)
        parts.port  # noqa: B018 - reading the port validates it
    except ValueError:
        ok = False
    if not ok:
        shown = urlsplit(url)._replace(query="").geturl() if "://" in url else repr(url)
        raise ConfigError(
            f"KITE_WS_URL={shown}: must be a WebSocket URL such as wss://ws.kite.trade or ws://simulator:8765"
        )


def _probability(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError("must be between 0 and 1")
    return value


@dataclass(frozen=True, slots=True)
class Setting:
    env: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str
    secret: bool = False
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.env.lower().replace("_", "-")

    def convert(self, raw: str) -> Any:
        shown = "(hidden)" if self.secret else repr(raw)
        if self.choices and raw not in self.choices:
            raise ConfigError(f"{self.env}={shown}: must be one of {', '.join(self.choices)}")
        try:
            return self.parse(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{self.env}={shown}: {exc}") from None


def add_arguments(parser: argparse.ArgumentParser, settings: Iterable[Setting]) -> None:
    for s in settings:
        default = "(secret)" if s.secret else ("none" if s.default is None else s.default)
        parser.add_argument(s.flag, dest=s.env, metavar=s.env, default=None,
                            help=f"{s.help} [env {s.env}; default {default}]")  # fmt: skip


def resolve(
    settings: Iterable[Setting],
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Setting name → parsed value, from flags, then the environment, then the default."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for s in settings:
        raw = getattr(args, s.env, None) if args is not None else None
        if raw is None:
            raw = environ.get(s.env)
        values[s.env] = s.default if raw in (None, "") else s.convert(raw)
    return values


SIMULATOR_SETTINGS = (
    Setting("SIM_HOST", "127.0.0.1", "address the simulator listens on"),
    Setting("SIM_PORT", 8765, "port the simulator listens on", int),
    Setting("SIM_HTTP_PORT", 8766, "port of the simulator's login and instruments endpoints (-1: off)", int),
    Setting("KITE_API_KEY", "simulator", "api_key the simulator accepts"),
    Setting("KITE_ACCESS_TOKEN", "simulator-token", "access_token the simulator accepts", secret=True),
    Setting("KITE_API_SECRET", "simulator-secret", "api_secret the login endpoint checks", secret=True),
    Setting(
        "SIM_RATE",
        1.0,
        "ticks per second per subscribed instrument (0: as fast as possible)",
        non_negative_float,
    ),
    Setting("SIM_MAX_RATE", 0.0, "cap on ticks per second per connection (0: none)", non_negative_float),
    Setting("SIM_PACKETS_PER_MESSAGE", 50, "tick packets per WebSocket message", non_negative_int),
    Setting("SIM_ORDER_RATE", 0.2, "new orders per second per connection (0: none)", non_negative_float),
    Setting(
        "SIM_DROP_EVERY", 0.0, "drop each connection after this many seconds (0: never)", non_negative_float
    ),
    Setting("SIM_MALFORMED_PROBABILITY", 0.0, "chance that a message is sent malformed", _probability),
    Setting("SIM_STALL_EVERY", 0.0, "stall sending every this many seconds (0: never)", non_negative_float),
    Setting("SIM_STALL_SECONDS", 0.0, "how long a stall lasts", non_negative_float),
    Setting("SIM_SEED", 0, "random seed: the same seed sends the same prices", int),
    Setting(
        "SIM_REPLAY_TICKS",
        0,
        "benchmark feed: send this many pre-encoded ticks per connection, then idle",
        non_negative_int,
    ),
    Setting(
        "SIM_ORDER_HIDE_EVERY",
        0,
        "leave every Nth final order update out of the socket (only GET /orders shows it; 0: none)",
        non_negative_int,
    ),
    Setting("SIM_SENT_LOG", None, "write every record sent to this file (JSON lines), flushed per message"),
    Setting("SIM_INSTRUMENTS_FILE", None, "instruments CSV (Kite dump format); default: the bundled one"),
    Setting("SIM_SYNTHETIC_INSTRUMENTS", 1000, "made-up instruments added for load tests", non_negative_int),
)


MARKET_SETTINGS = (
    Setting(
        "MARKET_CALENDAR_FILE",
        None,
        "holidays file, lines of `YYYY-MM-DD EXCHANGE[,EXCHANGE...] description`; "
        "default: the bundled connector/market/holidays.txt",
    ),
)

RUN_SETTINGS = (
    Setting("KITE_API_KEY", None, "Kite Connect api_key"),
    Setting("KITE_ACCESS_TOKEN", None, "access token of the day", secret=True),
    Setting("KITE_ACCESS_TOKEN_FILE", None, "file holding the access token, re-read when it changes"),
    Setting(
        "KITE_WS_URL",
        "wss://ws.kite.trade",
        "Kite ticker WebSocket URL (the simulator's in docker-compose)",
    ),
    Setting(
        "KITE_INSTRUMENTS",
        None,
        "comma-separated tokens or EXCHANGE:TRADINGSYMBOL, each optionally @ltp|@quote|@full",
    ),
    Setting(
        "KITE_MODE", "full", "mode of instruments that do not name one", choices=("ltp", "quote", "full")
    ),
    Setting("KITE_INSTRUMENTS_FILE", None, "instruments CSV (Kite's dump) for EXCHANGE:TRADINGSYMBOL names"),
    Setting(
        "KITE_INSTRUMENTS_URL",
        None,
        "download the instruments CSV from here at start (Kite: https://api.kite.trade/instruments)",
    ),
    Setting(
        "KITE_WATCHDOG_SECONDS",
        10.0,
        "reconnect when no message (ticks or heartbeat) came for this long",
        non_negative_float,
    ),
    Setting("KITE_RECONNECT_MAX_DELAY", 30.0, "cap of the reconnect backoff, seconds", non_negative_float),
    Setting("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092", "Kafka bootstrap servers"),
    Setting("KAFKA_TOPIC_TICKS", "kite.ticks", "topic for ticks (key: instrument token)"),
    Setting(
        "KAFKA_TOPIC_ORDER_UPDATES", "kite.order_updates", "topic for order updates (key: instrument token)"
    ),
    Setting("KAFKA_TOPIC_DEAD_LETTERS", "kite.dead_letters", "topic for undecodable input (raw bytes kept)"),
    Setting("KAFKA_TOPIC_PARTITIONS", 6, "partitions of topics created at start", positive_int),
    Setting("KAFKA_REPLICATION_FACTOR", 1, "replication factor of topics created at start", positive_int),
    Setting(
        "KAFKA_COMPRESSION", "lz4", "producer compression", choices=("none", "gzip", "snappy", "lz4", "zstd")
    ),
    Setting(
        "KAFKA_LINGER_MS",
        2,
        "producer linger.ms: how long a batch waits for more records (a floor under latency)",
        non_negative_int,
    ),
    Setting(
        "KAFKA_DELIVERY_TIMEOUT_MS",
        300_000,
        "give up on a record after this long (0: never)",
        non_negative_int,
    ),
    Setting("KAFKA_FRAMING", "single-object", "Avro framing", choices=("single-object", "confluent")),
    Setting("SCHEMA_REGISTRY_URL", None, "Confluent Schema Registry URL (KAFKA_FRAMING=confluent)"),
    Setting(
        "MAX_IN_FLIGHT",
        50_000,
        "records produced but not yet acknowledged, at most (per connection)",
        positive_int,
    ),
    Setting(
        "LOW_WATER_MARK",
        0,
        "block policy resumes reading below this many in flight (0: half of MAX_IN_FLIGHT)",
        non_negative_int,
    ),
    Setting("BACKPRESSURE_POLICY", "block", "when MAX_IN_FLIGHT is reached", choices=("block", "conflate")),
    Setting(
        "TICK_BACKLOG",
        100_000,
        "block policy: ticks that wait, in order, while MAX_IN_FLIGHT is reached; when full, reading stops",
        positive_int,
    ),
    Setting(
        "FLUSH_TIMEOUT_SECONDS",
        10.0,
        "on shutdown, wait this long for Kafka to acknowledge",
        non_negative_float,
    ),
    Setting(
        "SPOOL_DIR",
        "spool",
        "directory of the order-update write-ahead log (each update kept until Kafka acknowledges it)",
    ),
    Setting(
        "KITE_API_URL",
        None,
        "Kite REST API for order reconciliation (GET /orders); unset: https://api.kite.trade when "
        "KITE_WS_URL is Kite's own, no reconciliation otherwise",
    ),
    Setting(
        "ORDER_RECONCILE_INTERVAL_SECONDS",
        60.0,
        "fetch Kite's order book this often (and after every reconnect) to publish missed order updates "
        "(0: only after reconnects)",
        non_negative_float,
    ),
    Setting("METRICS_HOST", "0.0.0.0", "address of /metrics and /healthz"),
    Setting("METRICS_PORT", 9100, "port of /metrics and /healthz (0: off)", non_negative_int),
    Setting(
        "TICK_TIMESTAMP_WINDOW_SECONDS",
        600.0,
        "a tick's exchange time further than this from its receive time is not used as its Kafka timestamp "
        "(the receive time is; the record keeps both)",
        non_negative_float,
    ),
    Setting(
        "DEAD_LETTER_MAX_BYTES",
        262_144,
        "raw bytes kept in a dead letter; longer input is cut (its length and SHA-256 are kept)",
        positive_int,
    ),
    Setting(
        "CONNECTION_FAILURE_LIMIT",
        5,
        "a connection failing (an unexpected error, not a disconnect) more often than this within "
        "CONNECTION_FAILURE_WINDOW_SECONDS makes `run` exit non-zero, for the restart policy to act",
        positive_int,
    ),
    Setting(
        "CONNECTION_FAILURE_WINDOW_SECONDS",
        600.0,
        "the window of CONNECTION_FAILURE_LIMIT, seconds",
        non_negative_float,
    ),
    Setting(
        "SCHEMA_REGISTRY_TIMEOUT_SECONDS",
        60.0,
        "at start, wait this long for an unreachable registry",
        non_negative_float,
    ),
)

KITE_API = "https://api.kite.trade"
_KAFKA_MESSAGE_LIMIT = 1_000_000  # librdkafka's default message.max.bytes: a dead letter must fit in it


@dataclass(frozen=True, slots=True)
class RunSettings:
    """The settings of ``kite-connector run`` (and of the embedding API), parsed and checked once.

    Field names are the setting names in lower case; :meth:`load` reads flags and the environment.
    """

    kite_api_key: str
    kite_access_token: str | None = field(default=None, repr=False)
    kite_access_token_file: str | None = None
    kite_ws_url: str = "wss://ws.kite.trade"
    kite_instruments: str | None = None
    kite_mode: str = "full"
    kite_instruments_file: str | None = None
    kite_instruments_url: str | None = None
    kite_watchdog_seconds: float = 10.0
    kite_reconnect_max_delay: float = 30.0
    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_topic_ticks: str = "kite.ticks"
    kafka_topic_order_updates: str = "kite.order_updates"
    kafka_topic_dead_letters: str = "kite.dead_letters"
    kafka_topic_partitions: int = 6
    kafka_replication_factor: int = 1
    kafka_compression: str = "lz4"
    kafka_linger_ms: int = 2
    kafka_delivery_timeout_ms: int = 300_000
    kafka_framing: str = "single-object"
    schema_registry_url: str | None = None
    schema_registry_timeout_seconds: float = 60.0
    max_in_flight: int = 50_000
    low_water_mark: int = 0
    backpressure_policy: str = "block"
    tick_backlog: int = 100_000
    flush_timeout_seconds: float = 10.0
    spool_dir: str | None = "spool"
    kite_api_url: str | None = None
    order_reconcile_interval_seconds: float = 60.0
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9100
    tick_timestamp_window_seconds: float = 600.0
    dead_letter_max_bytes: int = 262_144
    connection_failure_limit: int = 5
    connection_failure_window_seconds: float = 600.0
    # Only from Python (the embedding API): extra librdkafka settings for the producer.
    producer_overrides: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.kite_api_key:
            raise ConfigError("KITE_API_KEY is not set")
        check_ws_url(self.kite_ws_url)
        if not self.kite_access_token and not self.kite_access_token_file:
            raise ConfigError("set KITE_ACCESS_TOKEN or KITE_ACCESS_TOKEN_FILE (see `kite-connector login`)")
        if self.low_water_mark >= self.max_in_flight:
            raise ConfigError("LOW_WATER_MARK must be below MAX_IN_FLIGHT")
        if self.tick_timestamp_window_seconds > 3000:
            raise ConfigError(
                "TICK_TIMESTAMP_WINDOW_SECONDS must be at most 3000: brokers refuse records more than an "
                "hour ahead (message.timestamp.after.max.ms)"
            )
        if self.dead_letter_max_bytes > _KAFKA_MESSAGE_LIMIT // 2:
            raise ConfigError(
                f"DEAD_LETTER_MAX_BYTES must be at most {_KAFKA_MESSAGE_LIMIT // 2}, so a dead letter "
                "always fits in a Kafka message"
            )

    @classmethod
    def load(
        cls, args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None
    ) -> RunSettings:
        """From flags, then the environment, then the defaults; a bad value raises :class:`ConfigError`."""
        return cls(**{name.lower(): value for name, value in resolve(RUN_SETTINGS, args, environ).items()})

    @property
    def reconcile_url(self) -> str | None:
        """Where to fetch the order book from, or None when there is no reconciliation."""
        if self.kite_api_url:
            return self.kite_api_url
        return KITE_API if urlsplit(self.kite_ws_url).hostname == "ws.kite.trade" else None

    @property
    def spool_path(self) -> Path | None:
        return Path(self.spool_dir) if self.spool_dir else None
