"""When the Indian exchanges trade: IST sessions per exchange segment, holidays from a text file.

Sans-I/O: :class:`MarketCalendar` answers from the holidays it is given; :func:`load_calendar` is the one
place that reads a file (``MARKET_CALENDAR_FILE``, else the bundled ``holidays.txt``).
"""

from importlib import resources

from connector.errors import ConfigError
from connector.market._calendar import (
    EXCHANGES,
    IST,
    REGULAR_HOURS,
    Holiday,
    Hours,
    MarketCalendar,
    Session,
    parse_holidays,
)
from connector.market._rules import prometheus_rules

__all__ = [
    "BUNDLED_CALENDAR",
    "EXCHANGES",
    "IST",
    "REGULAR_HOURS",
    "Holiday",
    "Hours",
    "MarketCalendar",
    "Session",
    "load_calendar",
    "parse_holidays",
    "prometheus_rules",
]

BUNDLED_CALENDAR = "connector/market/holidays.txt"


def load_calendar(path: str | None = None) -> MarketCalendar:
    """The calendar of the holidays file at ``path``, or of the bundled one; a bad file is a ConfigError."""
    shown = path or BUNDLED_CALENDAR
    try:
        if path:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        else:
            text = (resources.files(__package__) / "holidays.txt").read_text(encoding="utf-8")
        return MarketCalendar(parse_holidays(text))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"MARKET_CALENDAR_FILE={shown}: {exc}") from None
