"""``kite-connector status``: parsing two /metrics scrapes and /healthz, the table, and the JSON.

The pages under tests/fixtures/metrics are a connector with two lines (KITE_LINES=2) of one shard: line 1
is down after failures; WebSocket series carry connection and line, producer series shard.
"""

from __future__ import annotations

import io
import json
from datetime import datetime
from pathlib import Path

import pytest

from connector.errors import ConnectorError
from connector.market import IST, load_calendar
from connector.status import Report, Scrape, build_report, candles_report, render, run_status

PAGES = Path(__file__).resolve().parents[1] / "fixtures" / "metrics"
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=IST)  # a Monday: every market open
CALENDAR = load_calendar()
DOWN = (503, "connection 1 is down (last failure: RuntimeError: boom)\n")


def scrape(name: str, at: float) -> Scrape:
    return Scrape.parse((PAGES / name).read_text(), at)


def two_scrapes() -> Report:
    """The pages two seconds apart."""
    first, second = scrape("connector-1.txt", 10.0), scrape("connector-2.txt", 12.0)
    return build_report("http://c:9100", DOWN, first, second, NOW, CALENDAR)


def test_rates_come_from_two_scrapes_and_each_connection_and_shard_has_a_row() -> None:
    report = two_scrapes()
    assert not report.healthy
    assert report.health == "connection 1 is down (last failure: RuntimeError: boom)"
    first, second = report.connections
    assert (first.connection, first.line, first.state, first.ticks_per_second) == ("0", "0", "up", 75)
    assert (first.reconnects, first.failures) == (1, {})
    assert first.last_message_seconds_ago == pytest.approx(0.5)
    assert (second.connection, second.line, second.state, second.ticks_per_second) == ("1", "1", "down", 0)
    assert second.reconnects == 4 and second.failures == {"RuntimeError": 2, "BufferError": 1}
    (shard,) = report.shards
    assert (shard.shard, shard.delivered_per_second, shard.in_flight, shard.held) == ("0", 74, 3, 0)
    assert report.order_log == {"pending": 2, "bytes": 48213, "disk_free_bytes": 5.23e10, "errors": 0}
    assert [(f.exchange, f.last_tick_seconds_ago, f.market_open) for f in report.feeds] == [
        ("INDICES", 0.5, True),
        ("MCX", 300.0, True),
        ("NSE", 3.0, True),
    ]
    assert report.threads_down == ["kite-listener-1"]


def test_the_table() -> None:
    text = render(two_scrapes())
    lines = text.splitlines()
    assert (
        lines[0]
        == "connector http://c:9100: NOT HEALTHY (connection 1 is down (last failure: RuntimeError: boom))"
    )
    assert lines[2].split() == [
        "connection",
        "line",
        "state",
        "ticks/s",
        "reconnects",
        "last",
        "message",
        "failures",
    ]
    assert lines[3].split() == ["0", "0", "up", "75", "1", "0.5", "s", "ago", "none"]
    assert lines[4].split()[:3] == ["1", "1", "down"] and "BufferError x1, RuntimeError x2" in lines[4]
    assert lines[6].split() == ["shard", "acked/s", "in", "flight", "held"]
    assert lines[7].split() == ["0", "74", "3", "0"]
    assert "order log: 2 pending, 48.2 KB, 52.3 GB free, 0 write errors" in text
    assert "MCX       300.0 s ago  open" in text
    assert "threads down: kite-listener-1" in text


def test_a_token_refused_connection_says_so() -> None:
    page = (PAGES / "connector-1.txt").read_text()
    page = page.replace('refused{connection="1",line="1"} 0.0', 'refused{connection="1",line="1"} 1.0')
    report = build_report("u", DOWN, Scrape.parse(page, 0), None, NOW, CALENDAR)
    assert [c.state for c in report.connections] == ["up", "token refused"]


def test_one_scrape_has_no_rates_and_closed_markets_show() -> None:
    saturday = datetime(2026, 12, 5, 10, 0, tzinfo=IST)
    report = build_report("u", (200, "ok"), scrape("connector-1.txt", 0), None, saturday, CALENDAR)
    assert report.healthy and report.connections[0].ticks_per_second is None
    assert report.shards[0].delivered_per_second is None
    assert not any(f.market_open for f in report.feeds)
    assert render(report).splitlines()[3].split()[3] == "-"


def test_series_without_connection_or_shard_labels_form_one_row_each() -> None:
    page = "# TYPE records_in_flight gauge\nrecords_in_flight 7\n"
    page += "# TYPE kite_connection_up gauge\nkite_connection_up 1\n"
    report = build_report("u", (200, "ok"), Scrape.parse(page, 0), None, NOW, CALENDAR)
    assert [(c.connection, c.line, c.state) for c in report.connections] == [("all", "-", "up")]
    assert [(s.shard, s.in_flight) for s in report.shards] == [("all", 7)]
    assert report.order_log["pending"] is None and "order log: - pending" in render(report)


def test_a_counter_reset_between_scrapes_counts_from_zero() -> None:
    before = (
        '# TYPE kite_connection_up gauge\nkite_connection_up{connection="0",line="0"} 1\n'
        "# TYPE kite_ticks_received_total counter\n"
        'kite_ticks_received_total{connection="0",line="0",mode="ltp"} 900\n'
    )
    after = before.replace("900", "30")  # the process restarted in between
    report = build_report("u", (200, "ok"), Scrape.parse(before, 0), Scrape.parse(after, 1), NOW, CALENDAR)
    assert report.connections[0].ticks_per_second == 30


def test_the_candle_processor() -> None:
    page = (PAGES / "candles.txt").read_text()
    first = Scrape.parse(page, 0)
    second = Scrape.parse(page.replace("5000.0", "5200.0").replace('"1m"} 40.0', '"1m"} 44.0'), 2)
    candles = candles_report("http://c:9101", (200, "ok"), first, second)
    assert (candles.ticks_per_second, candles.bars_per_second) == (100, 2)
    assert (candles.consumer_lag_records, candles.watermark_lag_seconds, candles.blind) == (120, 2.5, False)
    report = build_report("u", (200, "ok"), scrape("connector-1.txt", 0), None, NOW, CALENDAR, candles)
    text = render(report)
    assert "candles http://c:9101: healthy (ok)" in text
    assert "ticks read/s 100, bars/s 2, consumer lag 120 ticks, watermark lag 2.5 s, late ticks 3" in text
    assert json.loads(report.to_json())["candles"]["watermark_lag_seconds"] == 2.5


def test_json_for_scripts() -> None:
    data = json.loads(two_scrapes().to_json())
    assert data["healthy"] is False
    assert data["connections"][1]["failures"] == {"RuntimeError": 2.0, "BufferError": 1.0}
    assert data["shards"] == [{"shard": "0", "delivered_per_second": 74.0, "in_flight": 3.0, "held": 0.0}]
    assert data["feeds"][0] == {"exchange": "INDICES", "last_tick_seconds_ago": 0.5, "market_open": True}


def test_an_unreachable_connector_is_named() -> None:
    with pytest.raises(ConnectorError, match=r"cannot reach http://127\.0\.0\.1:9/healthz"):
        run_status("http://127.0.0.1:9", None, 0, False, CALENDAR, io.StringIO())
