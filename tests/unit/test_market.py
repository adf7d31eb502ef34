"""The market calendar: IST sessions per exchange segment, weekends, holidays and partial days."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path

import pytest

from connector.errors import ConfigError
from connector.market import (
    EXCHANGES,
    IST,
    Holiday,
    Hours,
    MarketCalendar,
    Session,
    load_calendar,
    parse_holidays,
)

HOLIDAYS = """\
# a comment line
2026-03-03 NSE,NFO,BSE Holi  # a trailing comment
2026-03-03 MCX@17:00-23:30 Holi (morning session closed)
2026-01-01 MCX@09:00-17:00 New Year (evening session closed)
2026-02-01 NSE@09:15-15:30 Budget day: a Sunday session

2026-12-25 NSE,MCX Christmas
"""
CALENDAR = MarketCalendar(parse_holidays(HOLIDAYS))


def ist(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=IST)


@pytest.mark.parametrize(
    ("exchange", "opens", "closes"),
    [
        ("NSE", "09:15", "15:30"),
        ("NFO", "09:15", "15:30"),
        ("BSE", "09:15", "15:30"),
        ("BFO", "09:15", "15:30"),
        ("INDICES", "09:15", "15:30"),
        ("CDS", "09:00", "17:00"),
        ("BCD", "09:00", "17:00"),
        ("MCXSX", "09:00", "17:00"),
        ("MCX", "09:00", "23:30"),
    ],
)
def test_each_segment_trades_its_hours_on_a_weekday(exchange: str, opens: str, closes: str) -> None:
    day = "2026-12-08"  # a Tuesday
    before = ist(f"{day}T{opens}") - timedelta(minutes=1)
    assert not CALENDAR.is_open(exchange, before)
    assert CALENDAR.is_open(exchange, ist(f"{day}T{opens}")), "the opening minute trades"
    assert CALENDAR.is_open(exchange, ist(f"{day}T{closes}") - timedelta(seconds=1))
    assert not CALENDAR.is_open(exchange, ist(f"{day}T{closes}")), "the close does not"


def test_weekends_are_closed() -> None:
    for day in ("2026-12-05", "2026-12-06"):  # Saturday, Sunday
        assert not any(CALENDAR.is_open(e, ist(f"{day}T12:00")) for e in EXCHANGES)
    assert all(CALENDAR.is_open(e, ist("2026-12-07T12:00")) for e in EXCHANGES), "Monday"


def test_ist_has_no_daylight_saving_and_any_time_zone_is_accepted() -> None:
    # 03:45 UTC is 09:15 IST in January and in July alike
    for month in (1, 7):
        utc = datetime(2026, month, 14, 3, 45, tzinfo=UTC)
        assert CALENDAR.is_open("NSE", utc)
        assert not CALENDAR.is_open("NSE", utc - timedelta(seconds=1))
    new_york = timezone(timedelta(hours=-5))
    assert CALENDAR.is_open("NSE", datetime(2026, 12, 7, 23, 0, tzinfo=new_york)), "09:30 IST next day"


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a time zone"):
        CALENDAR.is_open("NSE", datetime(2026, 12, 7, 10, 0))


def test_a_holiday_closes_only_the_exchanges_it_names() -> None:
    noon = ist("2026-03-03T12:00")  # a Tuesday
    assert not CALENDAR.is_open("NSE", noon)
    assert not CALENDAR.is_open("BSE", noon)
    assert CALENDAR.is_open("CDS", noon), "not listed: trades as usual"
    assert CALENDAR.is_open("INDICES", noon)


def test_mcx_partial_days_trade_only_the_listed_session() -> None:
    assert not CALENDAR.is_open("MCX", ist("2026-03-03T10:00")), "morning session closed"
    assert not CALENDAR.is_open("MCX", ist("2026-03-03T16:59"))
    assert CALENDAR.is_open("MCX", ist("2026-03-03T17:00")), "evening session open"
    assert CALENDAR.is_open("MCX", ist("2026-03-03T23:29"))
    assert CALENDAR.is_open("MCX", ist("2026-01-01T16:59"))
    assert not CALENDAR.is_open("MCX", ist("2026-01-01T17:00")), "evening session closed"
    assert CALENDAR.hours("MCX", date(2026, 12, 25)) is None


def test_a_listed_weekend_day_is_a_special_session() -> None:
    assert CALENDAR.is_open("NSE", ist("2026-02-01T10:00")), "Sunday, listed with hours"
    assert not CALENDAR.is_open("BSE", ist("2026-02-01T10:00"))


def test_sessions_between_two_instants() -> None:
    got = CALENDAR.sessions(ist("2026-03-02T16:00"), ist("2026-03-04T09:10"), ["NSE", "MCX"])
    assert got == [
        Session("MCX", ist("2026-03-02T09:00"), ist("2026-03-02T23:30")),  # still open at 16:00
        Session("MCX", ist("2026-03-03T17:00"), ist("2026-03-03T23:30")),  # Holi: evening only; NSE closed
        Session("MCX", ist("2026-03-04T09:00"), ist("2026-03-04T23:30")),
    ]
    assert CALENDAR.sessions(ist("2026-12-05T00:00"), ist("2026-12-07T00:00")) == [], "a weekend"
    monday = CALENDAR.sessions(ist("2026-12-07T00:00"), ist("2026-12-07T09:15"))
    assert [s.exchange for s in monday] == ["CDS", "BCD", "MCX", "MCXSX"], "NSE opens at the end: excluded"
    assert all(s.open.utcoffset() == timedelta(hours=5, minutes=30) for s in monday)


def test_the_file_format() -> None:
    assert parse_holidays("2026-03-03 NSE,MCX@17:00-23:30 Holi, the festival") == [
        Holiday(date(2026, 3, 3), "NSE", None, "Holi, the festival"),
        Holiday(date(2026, 3, 3), "MCX", Hours(time(17, 0), time(23, 30)), "Holi, the festival"),
    ]
    assert parse_holidays("# nothing\n\n   \n") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-03-03 NSE", "line 1: expected YYYY-MM-DD EXCHANGE"),
        ("\n2026-02-30 NSE Holi", "line 2: '2026-02-30' is not a date"),
        ("2026-03-03 NYSE Holi", "line 1: unknown exchange 'NYSE'"),
        ("2026-03-03 nse Holi", "unknown exchange 'nse'"),
        ("2026-03-03 MCX@17-23 Holi", "hours must look like 09:15-15:30"),
        ("2026-03-03 MCX@18:00-17:00 Holi", "must close after it opens"),
        ("2026-03-03 NSE Holi\n2026-03-03 BSE,NSE Holi", "line 2: NSE on 2026-03-03 is listed twice"),
    ],
)
def test_a_bad_line_is_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_holidays(text)


def test_load_names_the_setting_and_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "holidays.txt"
    bad.write_text("2026-13-01 NSE Holi\n")
    with pytest.raises(ConfigError, match=rf"MARKET_CALENDAR_FILE={bad}: line 1: '2026-13-01' is not a date"):
        load_calendar(str(bad))
    with pytest.raises(ConfigError, match="MARKET_CALENDAR_FILE=/nonexistent"):
        load_calendar("/nonexistent")
    good = tmp_path / "mine.txt"
    good.write_text("2027-01-26 NSE Republic Day\n")
    assert load_calendar(str(good)).last_year() == 2027


def test_the_bundled_calendar_lists_2026() -> None:
    calendar = load_calendar()
    assert calendar.last_year() == 2026
    weekdays = {h.day for h in calendar.holidays}
    assert all(d.weekday() < 5 for d in weekdays), "the bundled file lists no weekend session"
    equity = [h.day for h in calendar.holidays if h.exchange == "NSE"]
    assert len(equity) == 16 and date(2026, 1, 15) in equity  # CMTR71775's 15 and the election day
    for exchange in ("NFO", "BSE", "BFO", "INDICES"):
        assert [h.day for h in calendar.holidays if h.exchange == exchange] == equity
    assert len([h for h in calendar.holidays if h.exchange == "CDS"]) == 20
    mcx = {h.day: h.hours for h in calendar.holidays if h.exchange == "MCX"}
    assert mcx[date(2026, 12, 25)] is None and str(mcx[date(2026, 11, 10)]) == "17:00-23:30"
    assert not calendar.is_open("NSE", ist("2026-12-25T10:00"))
    assert calendar.is_open("MCX", ist("2026-11-24T18:00")), "Guru Nanak Jayanti: evening session"
