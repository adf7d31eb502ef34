"""Candles in event time, sans I/O: ticks of one Kafka partition in, closed bars and late ticks out.

Bars are aligned to the Indian market's day (IST, UTC+05:30, no DST): a bar of interval ``I`` starts at
IST midnight plus a multiple of ``I``, so intervals must divide a day. The watermark of a partition is the
highest event time seen on it minus the grace; a bar closes as soon as the watermark reaches its end, and a
tick whose bar has (or would have) closed is late: reported, never added. When a partition is idle the
shell calls :meth:`PartitionBars.advance` with the wall clock, which moves the watermark the same way a tick
of that time would. The watermark only ever grows, so the open bars are always exactly those ending after
it, which is what makes the state small enough to checkpoint (:meth:`PartitionBars.snapshot`).

Gap markers (:meth:`PartitionBars.gap`) flag the bars they overlap: an open bar when it closes, a bar not
open yet when it opens, and an instrument's last closed bar by writing it again (``revision`` 1). A
marker is known only when its silence ends, usually while the bar holding that end is still open; one
that comes later than the instrument's next bar cannot reach the bars before that one, and says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from connector.errors import ConfigError

__all__ = [
    "DAY_MS",
    "IST_OFFSET_MS",
    "Candle",
    "GapSpan",
    "Interval",
    "PartitionBars",
    "bar_start",
    "parse_intervals",
]

DAY_MS = 86_400_000
IST_OFFSET_MS = 19_800_000  # UTC+05:30
_UNITS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": DAY_MS}
_NO_BAR = 1 << 62  # "no open bar" as an end time


class Interval(NamedTuple):
    label: str  # canonical: the largest unit that divides it (60m -> 1h)
    ms: int


def parse_intervals(text: str) -> tuple[Interval, ...]:
    """``"1m,5m,1h"`` → intervals, shortest first; each must be whole seconds that divide a day."""
    found: dict[int, Interval] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"(\d+)([smhd])", part)
        ms = int(m.group(1)) * _UNITS[m.group(2)] if m else 0
        if not ms or DAY_MS % ms:
            raise ConfigError(
                f"CANDLES_INTERVALS: {part!r} is not an interval that divides a day "
                "(e.g. 1m, 5m, 15m, 1h, 1d; units s, m, h, d)"
            )
        unit = next(u for u in "dhms" if ms % _UNITS[u] == 0)
        found[ms] = Interval(f"{ms // _UNITS[unit]}{unit}", ms)
    if not found:
        raise ConfigError("CANDLES_INTERVALS names no interval (e.g. 1m or 1m,5m,1h)")
    return tuple(sorted(found.values(), key=lambda i: i.ms))


def bar_start(t: int, interval_ms: int) -> int:
    """Start (UTC epoch ms) of the bar holding event time ``t``, aligned to IST midnight."""
    return t - (t + IST_OFFSET_MS) % interval_ms


def ist_day(t: int) -> int:
    return (t + IST_OFFSET_MS) // DAY_MS


class Candle(NamedTuple):
    """A closed bar, as written to the candles topic."""

    instrument_token: int
    interval: str
    start: int
    end: int
    open: float
    high: float
    low: float
    close: float
    volume: int | None
    ticks: int
    oi: int | None
    first_tick_at: int
    last_tick_at: int
    closed_by: str  # watermark or idle
    gap: bool = False  # a gap marker of the instrument overlaps the bar: ticks may be missing
    revision: int = 0  # 1: written again, flagged, as the marker came after the bar closed


class GapSpan(NamedTuple):
    """A gap marker as the core sees it: ticks of ``tokens`` may be missing in [start, end)."""

    start: int
    end: int
    tokens: frozenset[int]


@dataclass(slots=True)
class _Bar:
    open: float
    high: float
    low: float
    close: float
    first: int  # event time of the tick that set open
    last: int  # event time of the tick that set close
    ticks: int
    vmin: int | None
    vmax: int | None
    oi: int | None
    oi_at: int
    gap: bool = False


class PartitionBars:
    """Open bars and watermark of one input partition, for every interval."""

    def __init__(self, intervals: Iterable[Interval], grace_ms: int) -> None:
        self.intervals = tuple(intervals)
        self.grace_ms = grace_ms
        self.max_seen = -_NO_BAR  # highest event time seen (or given by advance)
        # Per interval: bar start -> token -> open bar; and token -> (vmax, IST day) of its last closed bar.
        self._open: list[dict[int, dict[int, _Bar]]] = [{} for _ in self.intervals]
        self._prev: list[dict[int, tuple[int, int]]] = [{} for _ in self.intervals]
        self._last: list[dict[int, Candle]] = [{} for _ in self.intervals]  # token -> its last closed bar
        # Per interval: the markers that may still overlap a bar not open yet (kept one bar past the
        # watermark, so a bar open of a short interval looks at a few markers, not the day's).
        self._gaps: list[set[GapSpan]] = [set() for _ in self.intervals]
        self._plan = tuple(zip(self.intervals, self._open, self._gaps, strict=True))
        self._next_end = _NO_BAR  # earliest end of an open bar
        self.closed: list[Candle] = []  # bars closed since the caller last took them
        self.dirty: set[int] = set()  # tokens whose state changed since the last snapshot

    @property
    def watermark(self) -> int:
        return self.max_seen - self.grace_ms

    def add(self, token: int, t: int, price: float, volume: int | None, oi: int | None) -> tuple[str, ...]:
        """Add one tick (in partition order); returns the intervals for which it came too late."""
        wm = self.max_seen - self.grace_ms
        late: tuple[str, ...] = ()
        for (label, ms), groups, gaps in self._plan:
            start = t - (t + IST_OFFSET_MS) % ms
            if start + ms <= wm:
                late += (label,)
                continue
            group = groups.get(start)
            if group is None:
                group = groups[start] = {}
                self._next_end = min(self._next_end, start + ms)
            bar = group.get(token)
            if bar is None:
                gap = bool(gaps) and _in_gap(gaps, token, start, start + ms)
                group[token] = _Bar(price, price, price, price, t, t, 1, volume, volume, oi, t, gap)
                continue
            bar.ticks += 1
            if price > bar.high:
                bar.high = price
            elif price < bar.low:
                bar.low = price
            if t < bar.first:
                bar.first, bar.open = t, price
            if t >= bar.last:
                bar.last, bar.close = t, price
            if volume is not None:
                if bar.vmax is None or bar.vmin is None:
                    bar.vmin = bar.vmax = volume
                elif volume > bar.vmax:
                    bar.vmax = volume
                elif volume < bar.vmin:
                    bar.vmin = volume
            if oi is not None and (t >= bar.oi_at or bar.oi is None):
                bar.oi, bar.oi_at = oi, t
        if len(late) < len(self._plan):
            self.dirty.add(token)
        if t > self.max_seen:
            self.max_seen = t
            if t - self.grace_ms >= self._next_end:
                self._close("watermark")
        return late

    def gap(self, span: GapSpan) -> tuple[int, int]:
        """A gap marker: flags the open bars of its instruments that it overlaps, writes again (in
        ``closed``) the last closed bar of an instrument it overlaps, and is kept for bars that open later.
        Applying it twice changes nothing. Returns (bars flagged, instruments whose marker came after a
        later bar closed: a bar of theirs before that one may overlap it unflagged)."""
        flagged = late = 0
        wm = self.watermark
        for ((_, ms), groups, gaps), last in zip(self._plan, self._last, strict=True):
            if span.end > wm - ms:
                gaps.add(span)
            for start, group in groups.items():
                if start < span.end and span.start < start + ms:
                    for token in span.tokens & group.keys():
                        if not group[token].gap:
                            group[token].gap = True
                            self.dirty.add(token)
                            flagged += 1
            for token in span.tokens & last.keys():
                bar = last[token]
                if bar.start < span.end and span.start < bar.end and not bar.gap:
                    last[token] = bar = bar._replace(gap=True, revision=1)
                    self.closed.append(bar)
                    self.dirty.add(token)
                    flagged += 1
                if span.start < bar.start:
                    late += 1
        return flagged, late

    def advance(self, now_ms: int) -> None:
        """The partition is idle: move the watermark as a tick at ``now_ms`` would (if any bar is open)."""
        if self._next_end != _NO_BAR and now_ms > self.max_seen:
            self.max_seen = now_ms
            if self.watermark >= self._next_end:
                self._close("idle")

    def _close(self, how: str) -> None:
        wm = self.max_seen - self.grace_ms
        next_end = _NO_BAR
        for i, ((label, ms), groups, gaps) in enumerate(self._plan):
            if gaps:  # a marker ending before every bar of this interval that can still open is done
                gaps.difference_update([g for g in gaps if g.end <= wm - ms])
            prev, last = self._prev[i], self._last[i]
            for start in sorted(groups):
                end = start + ms
                if end > wm:
                    next_end = min(next_end, end)
                    break
                day = ist_day(start)
                for token, bar in groups.pop(start).items():
                    volume = None
                    if bar.vmax is not None and bar.vmin is not None:
                        before = prev.get(token)
                        if before is None:
                            volume = bar.vmax - bar.vmin
                        elif before[1] != day or bar.vmax < before[0]:
                            volume = bar.vmax  # the counter restarted from zero: a new day
                        else:
                            volume = bar.vmax - before[0]
                        prev[token] = (bar.vmax, day)
                    last[token] = candle = Candle(
                        token, label, start, end, bar.open, bar.high, bar.low, bar.close, volume, bar.ticks,
                        bar.oi, bar.first, bar.last, how, bar.gap,
                    )  # fmt: skip
                    self.closed.append(candle)
                    self.dirty.add(token)
        self._next_end = next_end

    def open_bars(self) -> int:
        return sum(len(g) for groups in self._open for g in groups.values())

    # Checkpoints: per token, JSON-ready lists; per partition, the watermark.

    def token_state(self, token: int) -> list[Any]:
        """Per interval: [open bars of ``token`` as lists, [vmax, day] of its last closed bar or None, that
        bar or None]. Gap markers are not state: the shell reads them again after a restore."""
        out: list[Any] = []
        for i, groups in enumerate(self._open):
            bars = [[start, *_fields(g[token])] for start, g in sorted(groups.items()) if token in g]
            prev, last = self._prev[i].get(token), self._last[i].get(token)
            out.append([bars, None if prev is None else list(prev), None if last is None else list(last)])
        return out

    def restore_token(self, token: int, state: list[Any]) -> None:
        if len(state) != len(self.intervals):
            raise ValueError("state written with other CANDLES_INTERVALS")
        for i, (bars, prev, *last) in enumerate(state):  # no last bar: written before gap flags
            ms = self.intervals[i].ms
            for start, *fields in bars:
                self._open[i].setdefault(start, {})[token] = _Bar(*fields)
                self._next_end = min(self._next_end, start + ms)
            if prev is not None:
                self._prev[i][token] = (prev[0], prev[1])
            if last and last[0] is not None:
                self._last[i][token] = Candle(*last[0])

    def snapshot(self) -> dict[str, Any]:
        return {"max_seen": self.max_seen, "intervals": [i.label for i in self.intervals],
                "grace_ms": self.grace_ms}  # fmt: skip

    def restore(self, snapshot: dict[str, Any]) -> None:
        if snapshot["intervals"] != [i.label for i in self.intervals]:
            raise ValueError(
                f"state written with CANDLES_INTERVALS={','.join(snapshot['intervals'])}, not "
                f"{','.join(i.label for i in self.intervals)}"
            )
        # A changed grace must not move the watermark back: bars it already closed would open again.
        self.max_seen = max(snapshot["max_seen"], snapshot["max_seen"] - snapshot["grace_ms"] + self.grace_ms)


def _in_gap(gaps: set[GapSpan], token: int, start: int, end: int) -> bool:
    return any(g.start < end and start < g.end and token in g.tokens for g in gaps)


def _fields(bar: _Bar) -> list[Any]:
    return [bar.open, bar.high, bar.low, bar.close, bar.first, bar.last, bar.ticks, bar.vmin, bar.vmax,
            bar.oi, bar.oi_at, bar.gap]  # fmt: skip
