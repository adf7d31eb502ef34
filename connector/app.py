"""``kite-connector run``: wiring, lifecycle and signals. Everything else lives in its own module."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from types import FrameType

from connector.config import KITE_CONNECTIONS, RunSettings
from connector.errors import ConfigError, Interrupted
from connector.instruments import Instruments, parse_instruments, read_instruments
from connector.kite import MAX_TOKENS_PER_CONNECTION, Mode
from connector.logs import redact
from connector.runtime import Runtime
from connector.source import TokenSource

__all__ = [
    "EXIT_FAILED",
    "Connector",
    "download_instruments",
    "parse_subscriptions",
    "shard",
]

log = logging.getLogger("connector.app")
EXIT_FAILED = 3  # a connection kept failing: exit for the restart policy (2 is a start-up error)
_SWITCH_INTERVAL = 0.0005  # seconds


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


def shard(subscriptions: dict[int, Mode], lines: int = 1) -> list[dict[int, Mode]]:
    """Split into shards of at most 3000 instruments, each carried by ``lines`` connections; more than
    Kite's three connections in all is an error."""
    items = list(subscriptions.items())
    shards = [
        dict(items[i : i + MAX_TOKENS_PER_CONNECTION])
        for i in range(0, len(items), MAX_TOKENS_PER_CONNECTION)
    ]
    if len(shards) * lines > KITE_CONNECTIONS:
        limit = KITE_CONNECTIONS // lines * MAX_TOKENS_PER_CONNECTION
        raise ConfigError(
            f"{len(items)} instruments on {lines} line(s) need {len(shards) * lines} connections; Kite "
            f"allows {KITE_CONNECTIONS} per api_key ({MAX_TOKENS_PER_CONNECTION} instruments each), so at "
            f"most {limit} instruments with KITE_LINES={lines}"
        )
    return shards


class Connector:
    """``kite-connector run``: the runtime over up to three connections, until a signal or a failure."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = s = settings
        tokens = TokenSource(s.kite_access_token, s.kite_access_token_file)
        instruments = None
        if s.kite_instruments_url:
            instruments = download_instruments(s.kite_instruments_url, s.kite_api_key or "", tokens.get())
        elif s.kite_instruments_file:
            instruments = Instruments(read_instruments(s.kite_instruments_file))
        shards = shard(parse_subscriptions(s.kite_instruments, s.kite_mode, instruments), s.kite_lines)
        self.runtime = Runtime(s, shards, failure_limit=s.connection_failure_limit)
        self.stats, self.shard_stats = self.runtime.stats, self.runtime.shard_stats
        self.metrics = self.runtime.metrics

    def start(self) -> None:
        # A listener waiting for the GIL behind another thread (the other line's losing copy, a /metrics
        # scrape) would wait out the whole switch interval (5 ms by default), a tail Kafka alone has not.
        sys.setswitchinterval(_SWITCH_INTERVAL)
        self.runtime.start()
        log.info(
            "streaming %d instruments over %d shard(s) of %d line(s) to %s",
            sum(map(len, self.runtime.subscriptions)),
            len(self.runtime.subscriptions),
            self.settings.kite_lines,
            self.settings.kafka.servers,
        )

    def stop(self) -> int:
        """Stop reading, flush (bounded), report; returns the number of records left unacknowledged."""
        return self.runtime.stop()

    def run_until_signalled(self) -> int:
        """Run until SIGTERM/SIGINT (exit 0) or until a connection gives up (exit 3); a second signal
        exits at once."""
        stop, running = threading.Event(), threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if stop.is_set():
                log.warning("second signal: exiting without flushing")
                os._exit(1)
            log.info("%s: stopping", signal.Signals(signum).name)
            stop.set()
            if not running.is_set():  # a start-up wait (Kafka, the registry) ends now
                raise Interrupted(signum)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        running.set()
        failure = None
        while not stop.wait(1) and failure is None:
            failure = self.runtime.failure()
        if failure is not None:
            log.critical("%s; exiting so that the process is restarted", failure)
        self.stop()
        return EXIT_FAILED if failure is not None else 0
