"""Line arbitration: with several lines (WebSockets) carrying the same instruments, first arrival wins.

Kite has no sequence numbers, so a tick is known by its content: its instrument token and its tick id
(the CRC-32 of the packet as Kite sent it, so of every field that changes between updates: prices,
volume, OI, exchange and trade times, depth). The same tick arriving on another line within ``window_ms``
is dropped; a tick is missing only if every line missed it. Sans-I/O; the shard's lock serialises calls.

:class:`ArbiterPy` is the reference. The C one (``connector/serde/_speedups.c``, built with the other
speedups) makes the same decisions (tests/unit/test_native_fuzz.py feeds both the same sequences), and the
native transcoder arbitrates with it packet by packet, without building a Tick; :func:`new_arbiter`
gives the C one where it is built.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from connector.serde._speedups import Arbiter as _Native

__all__ = ["MAX_PER_TOKEN", "Arbiter", "ArbiterPy", "NativeArbiter", "new_arbiter"]

MAX_PER_TOKEN = 1 << 24  # the C arbiter's index holds ring slots in 32 bits


class Arbiter(Protocol):
    """What arbitrates lines (:class:`ArbiterPy`, or the C one)."""

    @property
    def window_ms(self) -> int: ...

    @property
    def per_token(self) -> int: ...

    def first(self, token: int, tick_id: int, now_ms: int, /) -> bool:
        """True for a tick no line delivered within the window (it wins); False for a repeat."""
        ...


class ArbiterPy:
    """Remembers, per instrument, the tick ids seen in the last ``window_ms`` (at most ``per_token``)."""

    def __init__(self, window_ms: int = 5000, per_token: int = 256) -> None:
        if window_ms < 0 or not 1 <= per_token <= MAX_PER_TOKEN:
            raise ValueError(f"window_ms must be >= 0 and per_token in 1..{MAX_PER_TOKEN}")
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


def _load_native() -> type[_Native] | None:
    """The arbiter in C (tokens and tick ids in 0..2**32-1, times in 64 bits), where it is built."""
    try:
        from connector.serde._speedups import Arbiter as native
    except ImportError:
        return None
    return native


NativeArbiter = _load_native()


def new_arbiter(window_ms: int = 5000, per_token: int = 256) -> Arbiter:
    """An arbiter of a shard's lines: the C one where it is built, else :class:`ArbiterPy`."""
    return (NativeArbiter or ArbiterPy)(window_ms, per_token)
