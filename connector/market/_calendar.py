"""Trading sessions of the Indian exchange segments Kite streams, in IST, with holidays from a text file.

No I/O and no clock: the caller passes the file's text and the instants to ask about.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

__all__ = [
    "EXCHANGES",
    "IST",
    "REGULAR_HOURS",
    "Holiday",
    "Hours",
    "MarketCalendar",
    "Session",
    "parse_holidays",
]

# India has had no daylight saving time since 1945: a fixed offset is exact.
IST = timezone(timedelta(hours=5, minutes=30), "IST")

# Kite's exchange segments, as named in its instrument dumps and in the metric labels (exchange=...).
EXCHANGES = ("NSE", "NFO", "CDS", "BSE", "BFO", "BCD", "MCX", "MCXSX", "INDICES")
_WEEKDAYS = range(0, 5)  # Monday..Friday


@dataclass(frozen=True, slots=True)
class Hours:
    """Trading hours of one day, IST wall clock: ``open`` included, ``close`` excluded."""

    open: time
    close: time

    def __post_init__(self) -> None:
        if self.open >= self.close:
            raise ValueError(f"{self}: the session must close after it opens")

    @classmethod
    def parse(cls, text: str) -> Hours:
        """``"09:15-15:30"``; ``24:00`` is not a time, the latest close is ``23:59``."""
        match = re.fullmatch(r"(\d\d):(\d\d)-(\d\d):(\d\d)", text)
        if not match:
            raise ValueError(f"{text!r}: hours must look like 09:15-15:30")
        h1, m1, h2, m2 = map(int, match.groups())
        return cls(time(h1, m1), time(h2, m2))

    @property
    def open_minute(self) -> int:
        return self.open.hour * 60 + self.open.minute

    @property
    def close_minute(self) -> int:
        return self.close.hour * 60 + self.close.minute

    def __str__(self) -> str:
        return f"{self.open:%H:%M}-{self.close:%H:%M}"


_EQUITY = Hours(time(9, 15), time(15, 30))
_CURRENCY = Hours(time(9, 0), time(17, 0))
REGULAR_HOURS: dict[str, Hours] = {
    "NSE": _EQUITY,
    "NFO": _EQUITY,
    "BSE": _EQUITY,
    "BFO": _EQUITY,
    "INDICES": _EQUITY,
    "CDS": _CURRENCY,
    "BCD": _CURRENCY,
    "MCXSX": _CURRENCY,  # the Metropolitan Stock Exchange's currency segment keeps the currency hours
    "MCX": Hours(time(9, 0), time(23, 30)),
}


@dataclass(frozen=True, slots=True)
class Holiday:
    """One line of the holidays file for one exchange: closed all day (``hours`` None), or trading only
    during ``hours`` that day (a session closed for part of the day, or a special session on a weekend)."""

    day: date
    exchange: str
    hours: Hours | None
    description: str


@dataclass(frozen=True, slots=True)
class Session:
    exchange: str
    open: datetime  # aware, IST
    close: datetime


_LINE_FORMAT = "YYYY-MM-DD EXCHANGE[@HH:MM-HH:MM][,EXCHANGE...] description"


def parse_holidays(text: str) -> list[Holiday]:
    """The holidays of a file's text; a ValueError names the line number and what is wrong.

    Each line: ``YYYY-MM-DD EXCHANGE[,EXCHANGE...] description``; ``#`` starts a comment. An exchange may
    carry the hours it trades that day, ``MCX@17:00-23:30``: otherwise it is closed all day.
    """
    holidays: list[Holiday] = []
    seen: set[tuple[date, str]] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            for holiday in _parse_line(line):
                if (holiday.day, holiday.exchange) in seen:
                    raise ValueError(f"{holiday.exchange} on {holiday.day} is listed twice")
                seen.add((holiday.day, holiday.exchange))
                holidays.append(holiday)
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
    return holidays


def _parse_line(line: str) -> Iterator[Holiday]:
    parts = line.split(None, 2)
    if len(parts) < 3:
        raise ValueError(f"expected {_LINE_FORMAT}")
    day_text, exchanges, description = parts
    try:
        day = date.fromisoformat(day_text)
    except ValueError:
        raise ValueError(f"{day_text!r} is not a date (YYYY-MM-DD)") from None
    for item in exchanges.split(","):
        exchange, _, hours = item.partition("@")
        if exchange not in REGULAR_HOURS:
            raise ValueError(f"unknown exchange {exchange!r}: one of {', '.join(EXCHANGES)}")
        yield Holiday(day, exchange, Hours.parse(hours) if hours else None, description)


class MarketCalendar:
    """When each exchange segment trades: regular hours Monday to Friday, except the listed days."""

    def __init__(self, holidays: Iterable[Holiday] = ()) -> None:
        self.holidays = tuple(sorted(holidays, key=lambda h: (h.day, EXCHANGES.index(h.exchange))))
        self._days = {(h.day, h.exchange): h for h in self.holidays}

    def hours(self, exchange: str, day: date) -> Hours | None:
        """The exchange's trading hours on ``day`` (an IST date), or None when it does not trade."""
        if exchange not in REGULAR_HOURS:
            raise ValueError(f"unknown exchange {exchange!r}: one of {', '.join(EXCHANGES)}")
        listed = self._days.get((day, exchange))
        if listed is not None:
            return listed.hours
        return REGULAR_HOURS[exchange] if day.weekday() in _WEEKDAYS else None

    def is_open(self, exchange: str, when: datetime) -> bool:
        ist = _ist(when)
        hours = self.hours(exchange, ist.date())
        return hours is not None and hours.open <= ist.time() < hours.close

    def sessions(self, start: datetime, end: datetime, exchanges: Iterable[str] = EXCHANGES) -> list[Session]:
        """Sessions overlapping [start, end), by opening time (whole sessions, not cut to the interval)."""
        first, last = _ist(start), _ist(end)
        found: list[Session] = []
        for exchange in exchanges:
            day = first.date()
            while day <= last.date():
                hours = self.hours(exchange, day)
                if hours is not None:
                    session = Session(
                        exchange,
                        datetime.combine(day, hours.open, IST),
                        datetime.combine(day, hours.close, IST),
                    )
                    if session.open < last and session.close > first:
                        found.append(session)
                day += timedelta(days=1)
        return sorted(found, key=lambda s: (s.open, EXCHANGES.index(s.exchange)))

    def last_year(self) -> int | None:
        """The latest year the holidays file lists, after which it needs the exchanges' next circulars."""
        return max((h.day.year for h in self.holidays), default=None)


def _ist(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError(f"{when.isoformat()}: needs a time zone (a naive time is ambiguous)")
    return when.astimezone(IST)
