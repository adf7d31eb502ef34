"""Line arbitration: with several lines (WebSockets) carrying the same instruments, first arrival wins.

Kite has no sequence numbers, so a tick is known by its content: its instrument token and its tick id
(the CRC-32 of the packet as Kite sent it, so of every field that changes between updates: prices,
volume, OI, exchange and trade times, depth). The same tick arriving on another line within ``window_ms``
is dropped; a tick is missing only if every line missed it. Sans-I/O; the shard's lock serialises calls.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["Arbiter"]


class Arbiter:
    """Remembers, per instrument, the tick ids seen in the last ``window_ms`` (at most ``per_token``)."""

    def __init__(self, window_ms: int = 5000, per_token: int = 256) -> None:
        self.window_ms, self.per_token = window_ms, per_token
        self._seen: dict[int, OrderedDict[int, int]] = {}

    def first(self, token: int, tick_id: int, now_ms: int) -> bool:
        """True for a tick no line delivered within the window (it wins); False for a repeat."""
        seen = self._seen.get(token)
        if seen is None:
            seen = self._seen[token] = OrderedDict()
        elif tick_id in seen and now_ms - seen[tick_id] <= self.window_ms:
            return False
        seen[tick_id] = now_ms
        seen.move_to_end(tick_id)
        while len(seen) > self.per_token or now_ms - next(iter(seen.values())) > self.window_ms:
            seen.popitem(last=False)
        return True
