"""What names a record across the instances of an HA set, and the headers HA adds. Sans-I/O.

Two instances receive the same tick on their own lines and serialize it at different times (its
``received_at`` differs), so a record is known by its key and its tick id (``kite.tick_id``: the CRC-32
of the packet as Kite sent it, equal on every line). Keyed by instrument, a 32-bit id leaves no practical
chance of two ticks of one instrument in one buffer window sharing it. A dead letter is known by a digest
of the input it kept; order updates by their record id (the order desk's business).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from connector.ha._buffer import Ident
from connector.sink import TICK_ID_HEADER

__all__ = [
    "INSTANCE_HEADER",
    "REPLAYED",
    "REPLAYED_HEADER",
    "TICK_ID_HEADER",
    "dead_letter_ident",
    "header",
    "tick_ident",
]

REPLAYED_HEADER = "kite.replayed"  # on records a new active wrote from its buffer at takeover
REPLAYED = (REPLAYED_HEADER, b"standby")
INSTANCE_HEADER = "kite.instance"  # HA_INSTANCE_ID of the instance that wrote the record


Headers = Sequence[tuple[str, Any]] | Mapping[str, Any] | None  # as producers take and consumers give them


def header(headers: Headers, name: str) -> bytes | None:
    """The value of the first header called ``name`` (as bytes), or None."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for key, value in pairs:
        if key == name:
            return value.encode() if isinstance(value, str) else value
    return None


def tick_ident(topic: str, key: bytes, headers: Headers) -> Ident | None:
    tick_id = header(headers, TICK_ID_HEADER)
    return None if tick_id is None else (topic, key, tick_id)


def dead_letter_ident(topic: str, letter: dict[str, Any]) -> Ident:
    """From a dead letter's fields (as the Avro reader gives them): the digest of the whole input."""
    digest = letter.get("raw_sha256") or hashlib.sha256(letter["raw"]).hexdigest()
    source = str(letter.get("source", "")).encode()
    return (topic, source, digest.encode())
