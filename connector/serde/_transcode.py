"""A whole binary Kite message → the tick records the pipeline produces, with the rules that make them.

:func:`transcode_py` is the reference: the codec's decoder, the Tick encoder and the rules below, composed.
The C transcoder (``_speedups.c``) does the same in one call without building a Tick; the tests hold the
two equal on random and mutated messages, windows, token sets and arbiter states. Both return None for a
message that is not entirely well formed, or that has a token not in ``tokens``: the caller's generic path
then reports it (and arbitrates it: nothing is arbitrated before a message is known to be taken).

With an ``arbiter`` (several lines), each packet's tick id (the CRC-32 of its bytes, as
:func:`connector.kite.packet_ids`) goes to ``arbiter.first(token, tick_id, received_at_ms)`` in packet
order, and a tick that loses (another line delivered it) is not encoded. With ``ids``, each record ends
with its tick id, for a sink that names ticks (the ``kite.tick_id`` header).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol, overload

from connector.kite import Mode, packet_ids
from connector.kite._binary import parse_binary_py
from connector.kite._layout import MODES
from connector.serde._tick import encode_tick_py

if TYPE_CHECKING:
    from connector.arbiter import Arbiter

__all__ = [
    "NamedTickRecord",
    "NamedTranscoded",
    "TickRecord",
    "Transcoded",
    "Transcoder",
    "native_transcode",
    "record_key",
    "record_timestamp",
    "transcode",
    "transcode_py",
]

TickRecord = tuple[bytes, bytes, int]  # key, framed value, Kafka timestamp in ms
NamedTickRecord = tuple[bytes, bytes, int, int]  # and the tick id
# (records, ltp, quote, full, segments): the records of the ticks that won (all, without an arbiter) in
# packet order; then the number of ticks of each mode decoded (won or not); then bit s set for each
# segment s (token & 0xff) a record is of (connector.kite.exchanges_of names them).
Transcoded = tuple[list[TickRecord], int, int, int, int]
NamedTranscoded = tuple[list[NamedTickRecord], int, int, int, int]
Tokens = set[int] | frozenset[int] | None


class Transcoder(Protocol):
    @overload
    def __call__(
        self,
        message: bytes,
        received_at_ms: int,
        prefix: bytes,
        window_ms: int,
        tokens: Tokens,
        arbiter: Arbiter | None = None,
        ids: Literal[False] = False,
        /,
    ) -> Transcoded | None: ...

    @overload
    def __call__(
        self,
        message: bytes,
        received_at_ms: int,
        prefix: bytes,
        window_ms: int,
        tokens: Tokens,
        arbiter: Arbiter | None,
        ids: Literal[True],
        /,
    ) -> NamedTranscoded | None: ...

    @overload
    def __call__(
        self,
        message: bytes,
        received_at_ms: int,
        prefix: bytes,
        window_ms: int,
        tokens: Tokens,
        arbiter: Arbiter | None,
        ids: bool,
        /,
    ) -> Transcoded | NamedTranscoded | None: ...


def record_key(token: int) -> bytes:
    """The Kafka key of a tick record: the instrument token in decimal."""
    return str(token).encode()


def record_timestamp(exchange_ms: int | None, received_ms: int, window_ms: int) -> int:
    """The Kafka timestamp of a tick record: its exchange time when it has one (not 0) within ``window_ms``
    of receipt, else the receipt (a wild exchange time in junk that decodes would make the broker refuse the
    record and its whole batch)."""
    ts = exchange_ms or received_ms
    return ts if abs(ts - received_ms) <= window_ms else received_ms


@overload
def transcode_py(
    message: bytes,
    received_at_ms: int,
    prefix: bytes,
    window_ms: int,
    tokens: Tokens,
    arbiter: Arbiter | None = None,
    ids: Literal[False] = False,
    /,
) -> Transcoded | None: ...


@overload
def transcode_py(
    message: bytes,
    received_at_ms: int,
    prefix: bytes,
    window_ms: int,
    tokens: Tokens,
    arbiter: Arbiter | None,
    ids: Literal[True],
    /,
) -> NamedTranscoded | None: ...


@overload
def transcode_py(
    message: bytes,
    received_at_ms: int,
    prefix: bytes,
    window_ms: int,
    tokens: Tokens,
    arbiter: Arbiter | None,
    ids: bool,
    /,
) -> Transcoded | NamedTranscoded | None: ...


def transcode_py(
    message: bytes,
    received_at_ms: int,
    prefix: bytes,
    window_ms: int,
    tokens: Tokens,
    arbiter: Arbiter | None = None,
    ids: bool = False,
    /,
) -> Transcoded | NamedTranscoded | None:
    """The records of ``message`` (bodies after ``prefix``, the serializer's framing), or None when it is not
    entirely well formed, has no tick, or has a token not in ``tokens`` (None: any)."""
    ticks, errors = parse_binary_py(message)
    if errors or not ticks or (tokens is not None and any(t.instrument_token not in tokens for t in ticks)):
        return None
    named = arbiter is not None or ids
    tick_ids = (packet_ids(message) or []) if named else [0] * len(ticks)  # well formed: an id a tick
    records: list[tuple[bytes, bytes, int, int]] = []
    segments = 0
    for tick, tick_id in zip(ticks, tick_ids, strict=True):
        token = tick.instrument_token
        if arbiter is not None and not arbiter.first(token, tick_id, received_at_ms):
            continue
        value = prefix + encode_tick_py(tick, received_at_ms)
        timestamp = record_timestamp(tick.exchange_timestamp_ms, received_at_ms, window_ms)
        records.append((record_key(token), value, timestamp, tick_id))
        segments |= 1 << (token & 0xFF)
    modes = [t.mode for t in ticks]
    ltp, quote, full = (modes.count(Mode(m)) for m in MODES)
    if ids:
        return records, ltp, quote, full, segments
    return [(key, value, ts) for key, value, ts, _ in records], ltp, quote, full, segments


def _load_native() -> Transcoder | None:
    """The transcoder in C, built at install time where a compiler exists (hatch_build.py)."""
    try:
        from connector.serde._speedups import transcode as native
    except ImportError:
        return None
    return native


native_transcode = _load_native()
transcode: Transcoder = native_transcode or transcode_py
