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


def _positive_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _positive_int(text: str) -> int:
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
    Setting("KITE_API_KEY", "simulator", "api_key the simulator accepts"),
    Setting("KITE_ACCESS_TOKEN", "simulator-token", "access_token the simulator accepts", secret=True),
    Setting("KITE_API_SECRET", "simulator-secret", "api_secret the login endpoint checks", secret=True),
    Setting(
        "SIM_RATE",
        1.0,
        "ticks per second per subscribed instrument (0: as fast as possible)",
        _positive_float,
    ),
    Setting("SIM_MAX_RATE", 0.0, "cap on ticks per second per connection (0: none)", _positive_float),
    Setting("SIM_PACKETS_PER_MESSAGE", 50, "tick packets per WebSocket message", _positive_int),
    Setting("SIM_ORDER_RATE", 0.2, "new orders per second per connection (0: none)", _positive_float),
    Setting(
        "SIM_DROP_EVERY", 0.0, "drop each connection after this many seconds (0: never)", _positive_float
    ),
    Setting("SIM_MALFORMED_PROBABILITY", 0.0, "chance that a message is sent malformed", _probability),
    Setting("SIM_STALL_EVERY", 0.0, "stall sending every this many seconds (0: never)", _positive_float),
    Setting("SIM_STALL_SECONDS", 0.0, "how long a stall lasts", _positive_float),
    Setting("SIM_SEED", 0, "random seed: the same seed sends the same prices", int),
    Setting("SIM_SENT_LOG", None, "write every record sent to this file (JSON lines)"),
    Setting("SIM_INSTRUMENTS_FILE", None, "instruments CSV (Kite dump format); default: the bundled one"),
    Setting("SIM_SYNTHETIC_INSTRUMENTS", 1000, "made-up instruments added for load tests", _positive_int),
)

RUN_SETTINGS: tuple[Setting, ...] = ()
