"""A whole binary Kite message → the tick records the pipeline produces, with the rules that make them.

:func:`transcode_py` is the reference: the codec's decoder, the Tick encoder and the rules below, composed.
The C transcoder (``_speedups.c``) does the same in one call without building a Tick; the tests hold the
two equal on random and mutated messages, windows and token sets. Both return None for a message that is
not entirely well formed, or that has a token not in ``tokens``: the caller's generic path then reports it.
"""

from __future__ import annotations

from typing import Protocol

from connector.kite import Mode
from connector.kite._binary import parse_binary_py
from connector.kite._layout import MODES
from connector.serde._tick import encode_tick_py

__all__ = [
    "Transcoded",
    "Transcoder",
    "native_transcode",
    "record_key",
    "record_timestamp",
    "transcode",
    "transcode_py",
]

# (records, ltp, quote, full, segments): records are (key, framed value, Kafka timestamp in ms) in packet
# order; then the number of ticks of each mode; then bit s set for each segment s (token & 0xff) the message
# has ticks of (connector.kite.exchanges_of names them).
Transcoded = tuple[list[tuple[bytes, bytes, int]], int, int, int, int]


class Transcoder(Protocol):
    def __call__(
        self,
        message: bytes,
        received_at_ms: int,
        prefix: bytes,
        window_ms: int,
        tokens: set[int] | frozenset[int] | None,
        /,
    ) -> Transcoded | None: ...


def record_key(token: int) -> bytes:
    """The Kafka key of a tick record: the instrument token in decimal."""
    return str(token).encode()


def record_timestamp(exchange_ms: int | None, received_ms: int, window_ms: int) -> int:
    """The Kafka timestamp of a tick record: its exchange time when it has one (not 0) within ``window_ms``
    of receipt, else the receipt (a wild exchange time in junk that decodes would make the broker refuse the
    record and its whole batch)."""
    ts = exchange_ms or received_ms
    return ts if abs(ts - received_ms) <= window_ms else received_ms


def transcode_py(
    message: bytes,
    received_at_ms: int,
    prefix: bytes,
    window_ms: int,
    tokens: set[int] | frozenset[int] | None,
    /,
) -> Transcoded | None:
    """The records of ``message`` (bodies after ``prefix``, the serializer's framing), or None when it is not
    entirely well formed, has no tick, or has a token not in ``tokens`` (None: any)."""
    ticks, errors = parse_binary_py(message)
    if errors or not ticks or (tokens is not None and any(t.instrument_token not in tokens for t in ticks)):
        return None
    records = [
        (
            record_key(t.instrument_token),
            prefix + encode_tick_py(t, received_at_ms),
            record_timestamp(t.exchange_timestamp_ms, received_at_ms, window_ms),
        )
        for t in ticks
    ]
    modes = [t.mode for t in ticks]
    ltp, quote, full = (modes.count(Mode(m)) for m in MODES)
    segments = 0
    for t in ticks:
        segments |= 1 << (t.instrument_token & 0xFF)
    return records, ltp, quote, full, segments


def _load_native() -> Transcoder | None:
    """The transcoder in C, built at install time where a compiler exists (hatch_build.py)."""
    try:
        from connector.serde._speedups import transcode as native
    except ImportError:
        return None
    return native


native_transcode = _load_native()
transcode: Transcoder = native_transcode or transcode_py
