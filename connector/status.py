"""``kite-connector status``: what an operator asks first, read from ``/healthz`` and ``/metrics``.

Rates come from two scrapes ``interval`` seconds apart. Parsing and rendering are pure functions over the
pages' text, so that they are tested on captured pages; :func:`run_status` does the HTTP.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TextIO

from prometheus_client.parser import text_string_to_metric_families

from connector.errors import ConnectorError
from connector.market import MarketCalendar

__all__ = ["Report", "Scrape", "build_report", "candles_report", "render", "run_status"]

ALL = "all"  # the connection of a series without a connection label (one pipeline, or totals)


@dataclass(frozen=True, slots=True)
class Scrape:
    """One read of a /metrics page: sample name → [(labels, value)], and when it was read (monotonic)."""

    samples: dict[str, list[tuple[dict[str, str], float]]]
    at: float

    @classmethod
    def parse(cls, text: str, at: float) -> Scrape:
        samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[s.name].append((dict(s.labels), float(s.value)))
        return cls(dict(samples), at)

    def by(self, name: str, label: str) -> dict[str, float]:
        """Values of ``name`` summed by ``label`` (series without it count under ``all``)."""
        out: dict[str, float] = defaultdict(float)
        for labels, value in self.samples.get(name, []):
            out[labels.get(label, ALL)] += value
        return dict(out)

    def total(self, name: str) -> float | None:
        values = [v for _, v in self.samples.get(name, [])]
        return sum(values) if values else None


@dataclass(frozen=True, slots=True)
class Connection:
    """One Kite WebSocket (with KITE_LINES=2, each shard has two: line 0 and line 1)."""

    connection: str
    line: str
    state: str  # up | down | token refused
    ticks_per_second: float | None  # None: a single scrape
    reconnects: float
    failures: dict[str, float]  # unexpected errors, by reason
    last_message_seconds_ago: float | None


@dataclass(frozen=True, slots=True)
class Shard:
    """One producer: what the lines of a shard read goes through it to Kafka."""

    shard: str
    delivered_per_second: float | None
    in_flight: float
    held: float


@dataclass(frozen=True, slots=True)
class Feed:
    exchange: str
    last_tick_seconds_ago: float
    market_open: bool


@dataclass(frozen=True, slots=True)
class Candles:
    url: str
    healthy: bool
    health: str
    ticks_per_second: float | None
    bars_per_second: float | None
    consumer_lag_records: float | None
    watermark_lag_seconds: float | None
    blind: bool
    late_ticks: float
    threads_down: list[str]


@dataclass(frozen=True, slots=True)
class Report:
    url: str
    healthy: bool
    health: str
    connections: list[Connection]
    shards: list[Shard]
    order_log: dict[str, float | None]
    feeds: list[Feed]
    threads_down: list[str]
    candles: Candles | None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _rate(first: Scrape, second: Scrape | None, name: str, label: str) -> dict[str, float] | None:
    """Per-second increase of counter ``name`` by ``label`` between the scrapes (``ALL``: in total)."""
    if second is None or second.at <= first.at:
        return None
    before, after = first.by(name, label), second.by(name, label)
    # a counter that went down was reset by a restart between the scrapes: count from zero
    return {
        k: (v - before.get(k, 0.0) if v >= before.get(k, 0.0) else v) / (second.at - first.at)
        for k, v in after.items()
    }


def _numbered(names: Iterable[str]) -> list[str]:
    return sorted(set(names), key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else c))


def _connections(first: Scrape, second: Scrape | None, now: float) -> list[Connection]:
    latest = second or first
    up = latest.by("kite_connection_up", "connection")
    lines = {
        labels.get("connection", ALL): labels.get("line", "-")
        for labels, _ in latest.samples.get("kite_connection_up", [])
    }
    refused = latest.by("kite_access_token_refused", "connection")
    ticks = _rate(first, second, "kite_ticks_received_total", "connection")
    reconnects = latest.by("reconnects_total", "connection")
    last_message = latest.by("kite_last_message_timestamp_seconds", "connection")
    failures: dict[str, dict[str, float]] = defaultdict(dict)
    for labels, value in latest.samples.get("connection_failures_total", []):
        if value:
            failures[labels.get("connection", ALL)][labels.get("reason", "?")] = value
    return [
        Connection(
            c,
            lines.get(c, "-"),
            "token refused" if refused.get(c) else "up" if up.get(c) else "down",
            None if ticks is None else ticks.get(c, 0.0),
            reconnects.get(c, 0.0),
            failures.get(c, {}),
            now - last_message[c] if c in last_message else None,
        )
        for c in _numbered([*up, *refused])
    ]


def _shards(first: Scrape, second: Scrape | None) -> list[Shard]:
    latest = second or first
    delivered = _rate(first, second, "records_delivered_total", "shard")
    in_flight, held = latest.by("records_in_flight", "shard"), latest.by("ticks_held", "shard")
    return [
        Shard(
            s, None if delivered is None else delivered.get(s, 0.0), in_flight.get(s, 0.0), held.get(s, 0.0)
        )
        for s in _numbered(in_flight)
    ]


def _threads_down(scrape: Scrape) -> list[str]:
    return sorted(t for t, v in scrape.by("thread_up", "thread").items() if v == 0)


def candles_report(url: str, health: tuple[int, str], first: Scrape, second: Scrape | None) -> Candles:
    """The candle processor's status from its /healthz and one or two /metrics scrapes."""
    latest = second or first
    ticks = _rate(first, second, "candles_ticks_read_total", ALL)
    bars = _rate(first, second, "candles_bars_written_total", ALL)
    return Candles(
        url,
        health[0] == 200,
        health[1].strip(),
        None if ticks is None else sum(ticks.values()),
        None if bars is None else sum(bars.values()),
        latest.total("candles_consumer_lag_records"),
        latest.total("candles_watermark_lag_seconds"),
        bool(latest.total("candles_undecodable_window")),
        latest.total("candles_late_ticks_total") or 0.0,
        _threads_down(latest),
    )


def build_report(
    url: str,
    health: tuple[int, str],
    first: Scrape,
    second: Scrape | None,
    now: datetime,
    calendar: MarketCalendar,
    candles: Candles | None = None,
) -> Report:
    """The status of one connector from its /healthz (status code, body) and one or two /metrics scrapes."""
    latest = second or first
    wall = now.timestamp()
    feeds = [
        Feed(exchange, wall - seen, calendar.is_open(exchange, now))
        for exchange, seen in sorted(latest.by("kite_last_tick_timestamp_seconds", "exchange").items())
    ]
    order_log = {
        "pending": latest.total("order_log_pending"),
        "bytes": latest.total("order_log_bytes"),
        "disk_free_bytes": latest.total("order_log_disk_free_bytes"),
        "errors": latest.total("order_log_errors_total"),
    }
    return Report(
        url,
        health[0] == 200,
        health[1].strip(),
        _connections(first, second, wall),
        _shards(first, second),
        order_log,
        feeds,
        _threads_down(latest),
        candles,
    )


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "B":
        for scale in ("B", "KB", "MB", "GB", "TB"):
            if abs(value) < 1000 or scale == "TB":
                return f"{value:.0f} {scale}" if scale == "B" else f"{value:.1f} {scale}"
            value /= 1000
    return f"{value:.1f}{unit}" if value != int(value) or unit else f"{value:.0f}"


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    body = [header, *rows]
    widths = [max(len(r[i]) for r in body) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in body]


def render(report: Report) -> str:
    """The report as the table ``kite-connector status`` prints."""
    state = "healthy" if report.healthy else "NOT HEALTHY"
    lines = [f"connector {report.url}: {state} ({report.health})", ""]
    lines += _table(
        ["connection", "line", "state", "ticks/s", "reconnects", "last message", "failures"],
        (
            [
                c.connection,
                c.line,
                c.state,
                _num(c.ticks_per_second),
                _num(c.reconnects),
                "-" if c.last_message_seconds_ago is None else f"{c.last_message_seconds_ago:.1f} s ago",
                ", ".join(f"{r} x{n:.0f}" for r, n in sorted(c.failures.items())) or "none",
            ]
            for c in report.connections
        ),
    )
    lines += ["", *_table(
        ["shard", "acked/s", "in flight", "held"],
        ([s.shard, _num(s.delivered_per_second), _num(s.in_flight), _num(s.held)] for s in report.shards),
    )]  # fmt: skip
    log = report.order_log
    lines += [
        "",
        f"order log: {_num(log['pending'])} pending, {_num(log['bytes'], 'B')}, "
        f"{_num(log['disk_free_bytes'], 'B')} free, {_num(log['errors'])} write errors",
    ]
    if report.feeds:
        lines += ["", *_table(
            ["exchange", "last tick", "market"],
            ([f.exchange, f"{f.last_tick_seconds_ago:.1f} s ago", "open" if f.market_open else "closed"]
             for f in report.feeds),
        )]  # fmt: skip
    if report.threads_down:
        lines += ["", f"threads down: {', '.join(report.threads_down)}"]
    if report.candles is not None:
        c = report.candles
        lines += [
            "",
            f"candles {c.url}: {'healthy' if c.healthy else 'NOT HEALTHY'} ({c.health})",
            f"  ticks read/s {_num(c.ticks_per_second)}, bars/s {_num(c.bars_per_second)}, "
            f"consumer lag {_num(c.consumer_lag_records)} ticks, "
            f"watermark lag {_num(c.watermark_lag_seconds, ' s')}, "
            f"late ticks {_num(c.late_ticks)}{', BLIND: a whole window undecodable' if c.blind else ''}",
        ]
        if c.threads_down:
            lines.append(f"  threads down: {', '.join(c.threads_down)}")
    return "\n".join(lines) + "\n"


def _get(url: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url.rstrip("/") + path, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:  # /healthz answers 503 with the reason
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectorError(f"cannot reach {url.rstrip('/')}{path}: {reason}") from None


def _scrapes(
    urls: list[str], interval: float, sleep: Callable[[float], None]
) -> list[tuple[tuple[int, str], Scrape, Scrape | None]]:
    """Health and two /metrics scrapes ``interval`` apart, of every URL (the second is skipped at 0)."""
    firsts = [(_get(u, "/healthz"), Scrape.parse(_get(u, "/metrics")[1], time.monotonic())) for u in urls]
    if interval <= 0:
        return [(health, first, None) for health, first in firsts]
    sleep(interval)
    return [
        (health, first, Scrape.parse(_get(u, "/metrics")[1], time.monotonic()))
        for u, (health, first) in zip(urls, firsts, strict=True)
    ]


def run_status(
    url: str,
    candles_url: str | None,
    interval: float,
    as_json: bool,
    calendar: MarketCalendar,
    out: TextIO,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print the status; 0 when everything asked is healthy, else 1."""
    scraped = _scrapes([url, *([candles_url] if candles_url else [])], interval, sleep)
    candles = candles_report(candles_url, *scraped[1]) if candles_url else None
    health, first, second = scraped[0]
    report = build_report(url, health, first, second, datetime.now(UTC), calendar, candles)
    out.write(report.to_json() + "\n" if as_json else render(report))
    return 0 if report.healthy and (candles is None or candles.healthy) else 1
