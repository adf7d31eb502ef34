"""Gap markers: "no data" told apart from "no trades".

Kite never replays, so while no line of a shard receives anything (a reconnect, a stall, a restart) its
instruments' ticks from then may be lost. :class:`GapWatch` (sans-I/O) sees every message of a shard and,
when one arrives after a silence longer than the threshold during which the market was open, returns the
:class:`Gap` it ends; the connector publishes it to the gaps topic. Heartbeats count as messages: a
shard whose instruments do not trade but whose lines are alive has no gap.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from connector.kite import exchanges_of
from connector.market import EXCHANGES, MarketCalendar

__all__ = ["Gap", "GapWatch", "gap_dict", "market_open_during", "read_last_received", "write_last_received"]

log = logging.getLogger("connector.gaps")
OpenDuring = Callable[[float, float], bool]  # (start, end) in unix seconds → was the market open then


class Gap(NamedTuple):
    shard: int
    instrument_tokens: Sequence[int]
    start_ms: int  # the last message before the silence
    end_ms: int  # the first message after it
    cause: str


def gap_dict(gap: Gap, received_at_ms: int) -> dict[str, Any]:
    return {
        "shard": gap.shard,
        "instrument_tokens": list(gap.instrument_tokens),
        "start": gap.start_ms,
        "end": gap.end_ms,
        "cause": gap.cause,
        "received_at": received_at_ms,
    }


def market_open_during(calendar: MarketCalendar, tokens: Callable[[], Iterable[int]]) -> OpenDuring:
    """Whether any exchange of ``tokens`` traded at some time between start and end. An instrument of a
    segment the calendar does not know counts as always open: a gap is better reported than hidden."""

    def open_during(start: float, end: float) -> bool:
        names = exchanges_of(sum({1 << (t & 0xFF) for t in tokens()}))
        known = [name for name in names if name in EXCHANGES]
        if len(known) < len(names):
            return True
        sessions = calendar.sessions(
            datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC), known
        )
        return any(s.open.timestamp() < end and start < s.close.timestamp() for s in sessions)

    return open_during


class GapWatch:
    """One shard's silence, seen through its messages (``message`` is called under the shard's lock)."""

    def __init__(
        self,
        shard: int,
        tokens: Callable[[], Sequence[int]],
        threshold_s: float,
        open_during: OpenDuring | None = None,
        last_ms: int | None = None,
    ) -> None:
        self.shard, self.tokens, self.threshold_ms = shard, tokens, int(threshold_s * 1000)
        self.open_during = open_during or (lambda start, end: True)
        self.last_ms = last_ms  # the last message seen; from an earlier run at start, if it left one
        self._causes: list[str] = ["connector restarted"] if last_ms is not None else []

    def cause(self, what: str) -> None:
        """Something a line reported (a disconnect and why): named in the gap it causes, if any."""
        if len(self._causes) < 10:
            self._causes.append(what)

    def message(self, now_ms: int) -> Gap | None:
        """A message arrived at ``now_ms``: the gap it ends, if the silence before it was one."""
        last, self.last_ms = self.last_ms, now_ms
        if last is None or now_ms - last <= self.threshold_ms:
            if last is not None:
                self._causes.clear()
            return None
        causes, self._causes = self._causes, []
        if not self.open_during(last / 1000, now_ms / 1000):
            return None
        cause = "; ".join(dict.fromkeys(causes)) or "no message on any line"
        return Gap(self.shard, tuple(self.tokens()), last, now_ms, cause)


def read_last_received(path: Path) -> dict[int, int]:
    """Shard → the last message time an earlier run recorded (empty when there is none to trust)."""
    try:
        return {int(k): int(v) for k, v in json.loads(path.read_text()).items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("ignoring %s (%s): a gap across the restart cannot be reported", path, exc)
        return {}


def write_last_received(path: Path, last: dict[int, int]) -> None:
    """Atomically, so a crash leaves the previous version or this one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({str(k): v for k, v in last.items()}))
    os.replace(tmp, path)
