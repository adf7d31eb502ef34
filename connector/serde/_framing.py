"""Wire framings around an Avro body: single-object encoding and Confluent Schema Registry."""

from __future__ import annotations

import struct
from typing import NamedTuple

from connector.errors import SerializationError

__all__ = [
    "CONFLUENT_MAGIC",
    "FINGERPRINT_HEADER",
    "SINGLE_OBJECT_MAGIC",
    "Frame",
    "confluent_frame",
    "single_object_frame",
    "split_frame",
]

SINGLE_OBJECT_MAGIC = b"\xc3\x01"  # Avro spec: marker of single-object encoding
CONFLUENT_MAGIC = b"\x00"  # Confluent wire format: magic byte 0, then a 4-byte big-endian schema id
FINGERPRINT_HEADER = "avro.fingerprint"  # Kafka header carrying the same 8 bytes as the frame
_SCHEMA_ID = struct.Struct(">I")


class Frame(NamedTuple):
    """A framed message taken apart: which framing, the schema reference, the Avro body."""

    framing: str  # "single-object" or "confluent"
    schema_ref: bytes | int  # 8-byte fingerprint, or registry schema id
    body: memoryview


def single_object_frame(fingerprint: bytes) -> bytes:
    """The 10-byte prefix of single-object encoding for a schema with this CRC-64-AVRO fingerprint."""
    return SINGLE_OBJECT_MAGIC + fingerprint


def confluent_frame(schema_id: int) -> bytes:
    """The 5-byte prefix of the Confluent wire format."""
    return CONFLUENT_MAGIC + _SCHEMA_ID.pack(schema_id)


def split_frame(data: bytes) -> Frame:
    """Detect the framing of ``data``; raises :class:`SerializationError` if it is neither."""
    view = memoryview(data)
    if data[:2] == SINGLE_OBJECT_MAGIC and len(data) >= 10:
        return Frame("single-object", bytes(view[2:10]), view[10:])
    if data[:1] == CONFLUENT_MAGIC and len(data) >= 5:
        return Frame("confluent", _SCHEMA_ID.unpack_from(data, 1)[0], view[5:])
    raise SerializationError(
        f"invalid magic byte {data[:2].hex() or '(empty)'}: "
        "neither Avro single-object (c301) nor Confluent (00) framing"
    )
