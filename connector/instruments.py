"""Kite's instruments dump (CSV): look-ups by token and by ``EXCHANGE:TRADINGSYMBOL``."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple, TextIO

from connector.errors import ConfigError

__all__ = ["Instrument", "Instruments", "parse_instruments", "read_instruments"]


class Instrument(NamedTuple):
    instrument_token: int
    tradingsymbol: str
    exchange: str
    segment: str
    instrument_type: str
    tick_size: float
    lot_size: int
    last_price: float
    name: str = ""

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.tradingsymbol}"


def _rows(fh: TextIO, source: str) -> Iterator[Instrument]:
    for line, row in enumerate(csv.DictReader(fh), 2):
        try:
            yield Instrument(
                instrument_token=int(row["instrument_token"]),
                tradingsymbol=row["tradingsymbol"],
                exchange=row["exchange"],
                segment=row.get("segment") or row["exchange"],
                instrument_type=row.get("instrument_type") or "",
                tick_size=float(row.get("tick_size") or 0.05),
                lot_size=int(float(row.get("lot_size") or 1)),
                last_price=float(row.get("last_price") or 0.0),
                name=row.get("name") or "",
            )
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"{source} line {line}: not an instruments dump row ({exc})") from exc


def parse_instruments(text: str, source: str) -> list[Instrument]:
    """Parse an instruments CSV already in memory (e.g. downloaded); ``source`` names it in errors."""
    return list(_rows(io.StringIO(text), source))


def read_instruments(path: str | Path) -> list[Instrument]:
    """Read an instruments CSV in Kite's dump format (the columns of ``/instruments``)."""
    try:
        with open(path, newline="") as fh:
            return list(_rows(fh, str(path)))
    except OSError as exc:
        raise ConfigError(f"cannot read instruments file {path}: {exc.strerror}") from exc


class Instruments:
    """Instruments indexed by token and by ``EXCHANGE:TRADINGSYMBOL``."""

    def __init__(self, instruments: Iterable[Instrument]) -> None:
        self.by_token = {i.instrument_token: i for i in instruments}
        self.by_key = {i.key: i for i in self.by_token.values()}

    def resolve(self, name: str) -> int:
        """A token for ``EXCHANGE:TRADINGSYMBOL`` (or a decimal token as it is)."""
        if name.isdigit():
            return int(name)
        found = self.by_key.get(name.upper())
        if found is None:
            raise ConfigError(
                f"instrument {name!r} is not in the instruments file: use EXCHANGE:TRADINGSYMBOL"
            )
        return found.instrument_token
