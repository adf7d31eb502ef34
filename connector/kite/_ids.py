"""Tick ids: what names a tick as Kite sent it, the same on every connection that received it."""

from __future__ import annotations

import struct
import zlib

__all__ = ["packet_ids"]

_U16 = struct.Struct(">H")


def packet_ids(data: bytes) -> list[int] | None:
    """CRC-32 (as ``zlib.crc32``) of each packet of a binary message, in order; None when the message's
    framing does not add up (its packets are then not arbitrated: a malformed message is rare)."""
    if len(data) < 2:
        return []
    count, off, ids = _U16.unpack_from(data)[0], 2, []
    for _ in range(count):
        if off + 2 > len(data):
            return None
        length = _U16.unpack_from(data, off)[0]
        off += 2
        if off + length > len(data):
            return None
        ids.append(zlib.crc32(data[off : off + length]))
        off += length
    return ids if off == len(data) else None
