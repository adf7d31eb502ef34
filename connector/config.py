"""Configuration in one place: every setting is an environment variable and a CLI flag of the same name.

``KITE_API_KEY`` is also ``--kite-api-key``; a flag wins over the environment, the environment over the
default. Values are parsed and checked at start-up; a bad one stops the process with a message naming
the variable. Secret values are never echoed back, in errors or anywhere else.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connector.errors import ConfigError

__all__ = ["RUN_SETTINGS", "SIMULATOR_SETTINGS", "Setting", "add_arguments", "resolve"]


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


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
        _non_negative_float,
    ),
    Setting("SIM_MAX_RATE", 0.0, "cap on ticks per second per connection (0: none)", _non_negative_float),
    Setting("SIM_PACKETS_PER_MESSAGE", 50, "tick packets per WebSocket message", _non_negative_int),
    Setting("SIM_ORDER_RATE", 0.2, "new orders per second per connection (0: none)", _non_negative_float),
    Setting(
        "SIM_DROP_EVERY", 0.0, "drop each connection after this many seconds (0: never)", _non_negative_float
    ),
    Setting("SIM_MALFORMED_PROBABILITY", 0.0, "chance that a message is sent malformed", _probability),
    Setting("SIM_STALL_EVERY", 0.0, "stall sending every this many seconds (0: never)", _non_negative_float),
    Setting("SIM_STALL_SECONDS", 0.0, "how long a stall lasts", _non_negative_float),
    Setting("SIM_SEED", 0, "random seed: the same seed sends the same prices", int),
    Setting(
        "SIM_REPLAY_TICKS",
        0,
        "benchmark feed: send this many pre-encoded ticks per connection, then idle",
        _non_negative_int,
    ),
    Setting("SIM_SENT_LOG", None, "write every record sent to this file (JSON lines)"),
    Setting("SIM_INSTRUMENTS_FILE", None, "instruments CSV (Kite dump format); default: the bundled one"),
    Setting("SIM_SYNTHETIC_INSTRUMENTS", 1000, "made-up instruments added for load tests", _non_negative_int),
)


RUN_SETTINGS = (
    Setting("KITE_API_KEY", None, "Kite Connect api_key"),
    Setting("KITE_ACCESS_TOKEN", None, "access token of the day", secret=True),
    Setting("KITE_ACCESS_TOKEN_FILE", None, "file holding the access token, re-read when it changes"),
    Setting(
        "KITE_WS_URL", "wss://ws.kite.trade", "Kite ticker WebSocket URL (the simulator's in docker-compose)"
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
        _non_negative_float,
    ),
    Setting("KITE_RECONNECT_MAX_DELAY", 30.0, "cap of the reconnect backoff, seconds", _non_negative_float),
    Setting("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092", "Kafka bootstrap servers"),
    Setting("KAFKA_TOPIC_TICKS", "kite.ticks", "topic for ticks (key: instrument token)"),
    Setting(
        "KAFKA_TOPIC_ORDER_UPDATES", "kite.order_updates", "topic for order updates (key: instrument token)"
    ),
    Setting("KAFKA_TOPIC_DEAD_LETTERS", "kite.dead_letters", "topic for undecodable input (raw bytes kept)"),
    Setting("KAFKA_TOPIC_PARTITIONS", 6, "partitions of topics created at start", int),
    Setting("KAFKA_REPLICATION_FACTOR", 1, "replication factor of topics created at start", int),
    Setting(
        "KAFKA_COMPRESSION", "lz4", "producer compression", choices=("none", "gzip", "snappy", "lz4", "zstd")
    ),
    Setting(
        "KAFKA_LINGER_MS",
        2,
        "producer linger.ms: how long a batch waits for more records (a floor under latency)",
        _non_negative_int,
    ),
    Setting(
        "KAFKA_DELIVERY_TIMEOUT_MS",
        300_000,
        "give up on a record after this long (0: never)",
        _non_negative_int,
    ),
    Setting("KAFKA_FRAMING", "single-object", "Avro framing", choices=("single-object", "confluent")),
    Setting("SCHEMA_REGISTRY_URL", None, "Confluent Schema Registry URL (KAFKA_FRAMING=confluent)"),
    Setting(
        "MAX_IN_FLIGHT", 50_000, "records produced but not yet acknowledged, at most (per connection)", int
    ),
    Setting(
        "LOW_WATER_MARK",
        0,
        "block policy resumes reading below this many in flight (0: half of MAX_IN_FLIGHT)",
        _non_negative_int,
    ),
    Setting("BACKPRESSURE_POLICY", "block", "when MAX_IN_FLIGHT is reached", choices=("block", "conflate")),
    Setting(
        "FLUSH_TIMEOUT_SECONDS",
        10.0,
        "on shutdown, wait this long for Kafka to acknowledge",
        _non_negative_float,
    ),
    Setting("SPOOL_DIR", "spool", "where undelivered order updates are kept until the next start"),
    Setting("METRICS_HOST", "0.0.0.0", "address of /metrics and /healthz"),
    Setting("METRICS_PORT", 9100, "port of /metrics and /healthz (0: off)", _non_negative_int),
    Setting(
        "SCHEMA_REGISTRY_TIMEOUT_SECONDS",
        60.0,
        "at start, wait this long for an unreachable registry",
        _non_negative_float,
    ),
)
