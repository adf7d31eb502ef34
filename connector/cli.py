"""``kite-connector``: one command, one subcommand per job."""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from connector import kite
from connector.config import (
    CandlesSettings,
    ConsumeSettings,
    LoginSettings,
    MarketSettings,
    RunSettings,
    Settings,
    SimulatorSettings,
)
from connector.errors import ConnectorError, Interrupted, MalformedFrame
from connector.logs import setup_logging

__all__ = ["main"]


def _decode_line(line: str) -> tuple[list[dict[str, Any]], list[MalformedFrame]]:
    """The records of one base64 message, and the faults of a message that still had good packets."""
    try:
        data = base64.b64decode(line, validate=True)
    except binascii.Error as exc:
        raise MalformedFrame(f"not base64: {exc}", line.encode()) from exc
    if data[:1] == b"{":
        record = kite.parse_text(data)
        body = record.to_json_dict() if isinstance(record, kite.OrderUpdate) else record._asdict()
        return [{"type": type(record).__name__, **body}], []
    ticks, errors = kite.parse_binary(data)
    if errors and not ticks:
        raise errors[0]
    return [{"type": "Tick", **t.to_json_dict()} for t in ticks], errors


def decode_stream(lines: TextIO, out: TextIO, err: TextIO) -> int:
    """Base64 WebSocket messages in, one JSON object per record out; returns how many lines failed."""
    failed = 0
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            records, faults = _decode_line(line)
        except MalformedFrame as exc:
            failed += 1
            err.write(f"line {number}: {exc}\n")
            continue
        for record in records:
            out.write(json.dumps(record) + "\n")
        for fault in faults:
            err.write(f"line {number}: {fault} (the message's other packets were decoded)\n")
    return failed


def _cmd_decode(_: argparse.Namespace) -> int:
    return 1 if decode_stream(sys.stdin, sys.stdout, sys.stderr) else 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    import asyncio

    from connector.instruments import read_instruments
    from connector.simulator import Simulator, SimulatorConfig, bundled_instruments, synthetic_instruments

    v = SimulatorSettings.load(args)
    instruments = (
        read_instruments(v.sim_instruments_file) if v.sim_instruments_file else bundled_instruments()
    )
    instruments += synthetic_instruments(v.sim_synthetic_instruments)
    config = SimulatorConfig(
        api_key=v.kite_api_key,
        access_token=v.kite_access_token,
        api_secret=v.kite_api_secret,
        host=v.sim_host,
        port=v.sim_port,
        http_port=None if v.sim_http_port < 0 else v.sim_http_port,
        rate=v.sim_rate,
        max_rate=v.sim_max_rate,
        packets_per_message=v.sim_packets_per_message,
        order_rate=v.sim_order_rate,
        jitter_ms=v.sim_jitter_ms,
        drop_every=v.sim_drop_every,
        malformed_probability=v.sim_malformed_probability,
        stall_every=v.sim_stall_every,
        stall_seconds=v.sim_stall_seconds,
        fault_connections=v.sim_fault_connections or (),
        seed=v.sim_seed,
        sent_log=v.sim_sent_log,
        replay_ticks=v.sim_replay_ticks,
        order_hide_every=v.sim_order_hide_every,
    )
    simulator = Simulator(config, instruments)

    async def serve_until_signalled() -> None:
        # SIGTERM (docker stop) and SIGINT stop it cleanly: connections closed, the sent log complete.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await simulator.serve(stop=stop)

    try:
        asyncio.run(serve_until_signalled())
    finally:
        simulator.close()
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from connector.app import Connector

    return Connector(RunSettings.load(args)).run_until_signalled()


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def _cmd_consume(args: argparse.Namespace) -> int:
    from connector.consume import consume

    # SIGTERM (docker stop) ends it at once, waiting or reading; as a container's PID 1 it would be ignored
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.suppress(BrokenPipeError):  # e.g. piped into `head`
        consume(ConsumeSettings.load(args), sys.stdout, sys.stderr)
    return 0


def _cmd_candles(args: argparse.Namespace) -> int:
    from connector.candles import serve

    return serve(CandlesSettings.load(args))


def _cmd_login(args: argparse.Namespace) -> int:
    from connector.login import login

    login(LoginSettings.load(args))
    return 0


def _cmd_market_calendar(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from connector.market import BUNDLED_CALENDAR, EXCHANGES, load_calendar, prometheus_rules

    path = MarketSettings.load(args).market_calendar_file
    calendar = load_calendar(path)
    if args.prometheus_rules:
        sys.stdout.write(prometheus_rules(calendar, path or BUNDLED_CALENDAR, args.always_open))
        return 0
    now = datetime.now(UTC)
    upcoming = calendar.sessions(now, now + timedelta(days=14))
    for exchange in EXCHANGES:
        session = next((s for s in upcoming if s.exchange == exchange), None)
        if session is None:
            print(f"{exchange:8} no session in the next 14 days")
        elif session.open <= now:
            print(f"{exchange:8} open until {session.close:%a %Y-%m-%d %H:%M} IST")
        else:
            print(f"{exchange:8} closed, opens {session.open:%a %Y-%m-%d %H:%M} IST")
    # exchanges publish the next year's holidays in December
    if (calendar.last_year() or 0) < now.year + (now.month == 12):
        print(f"holidays are listed up to {calendar.last_year()}: add the next year's", file=sys.stderr)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from connector.market import load_calendar
    from connector.status import run_status

    calendar = load_calendar(MarketSettings.load(args).market_calendar_file)
    return run_status(args.url, args.candles_url, args.interval, args.json, calendar, sys.stdout)


def _subcommand(
    sub: Any,
    name: str,
    help: str,
    func: Callable[[argparse.Namespace], int],
    settings: type[Settings] | None = None,
) -> argparse.ArgumentParser:
    # No abbreviated flags: --kafka-sasl-password (there is none: secrets have no flag) must not be taken
    # for --kafka-sasl-password-file, which would echo the secret back as a file name.
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help, allow_abbrev=False)
    if settings is not None:
        settings.add_arguments(parser)
    parser.set_defaults(func=func)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kite-connector", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    parser.add_argument(
        "--log-level", default=None, metavar="LOG_LEVEL", help="DEBUG, INFO, WARNING [env LOG_LEVEL]"
    )
    parser.add_argument(
        "--log-format", default=None, metavar="LOG_FORMAT", help="json or text [env LOG_FORMAT]"
    )
    _subcommand(
        sub, "decode", "decode base64 WebSocket messages (one per line) from stdin to JSON", _cmd_decode
    )
    _subcommand(sub, "run", "stream Kite ticks and order updates into Kafka", _cmd_run, RunSettings)
    _subcommand(
        sub,
        "consume",
        "read the connector's topics and print decoded records",
        _cmd_consume,
        ConsumeSettings,
    )
    _subcommand(
        sub,
        "candles",
        "turn the ticks topic into OHLCV bars (exactly once, in event time)",
        _cmd_candles,
        CandlesSettings,
    )
    _subcommand(
        sub,
        "login",
        "exchange a Kite request_token for the day's access token file",
        _cmd_login,
        LoginSettings,
    )
    _subcommand(sub, "simulate", "run the Kite-compatible ticker simulator", _cmd_simulate, SimulatorSettings)
    calendar = _subcommand(
        sub,
        "market-calendar",
        "when each exchange trades next (IST), or the calendar as Prometheus recording rules",
        _cmd_market_calendar,
        MarketSettings,
    )
    calendar.add_argument("--prometheus-rules", action="store_true", help="print the rule file")
    calendar.add_argument(
        "--always-open", action="store_true", help="rules recording every exchange as open (alerting drills)"
    )
    status = _subcommand(
        sub,
        "status",
        "each connection's state, rates, in flight, order log and failures, from /healthz and /metrics",
        _cmd_status,
        MarketSettings,
    )
    status.add_argument("--url", default="http://127.0.0.1:9100", help="the connector's metrics address")
    status.add_argument(
        "--candles-url", help="the candle processor's metrics address, e.g. http://127.0.0.1:9101"
    )
    status.add_argument("--interval", type=float, default=1.0, help="seconds between two scrapes (0: one)")
    status.add_argument("--json", action="store_true", help="JSON for scripts instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named without the values that follow: one may be a secret given as a flag by mistake
        flags = " ".join(a.partition("=")[0] for a in unknown if a.startswith("-")) or "(values)"
        parser.error(f"unrecognized arguments: {flags} (secrets have no flags: set their variable or _FILE)")
    setup_logging(
        args.log_level or os.environ.get("LOG_LEVEL", "INFO"),
        args.log_format or os.environ.get("LOG_FORMAT", "json"),
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConnectorError as exc:
        print(f"kite-connector: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Interrupted says which signal; a bare one is SIGINT's
        return 128 + getattr(exc, "signum", signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
