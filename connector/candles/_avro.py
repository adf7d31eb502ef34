"""Framed Avro for what the candle processor writes: Candle records and dead letters."""

from __future__ import annotations

from typing import Any

from connector.candles._bars import Candle
from connector.serde import (
    FINGERPRINT_HEADER,
    Serializer,
    dead_letter_dict,
    fastavro_encoder,
    load_schema,
)
from connector.serde._framing import confluent_frame, single_object_frame
from connector.serde._registry import register_value_schemas

__all__ = ["candle_dict", "serializer"]


def candle_dict(c: Candle, _: int) -> dict[str, Any]:
    return c._asdict()


_TO_DICT: dict[str, Any] = {"candle": candle_dict, "dead_letter": dead_letter_dict}


def serializer(kind: str, topic: str, framing: str, registry: Any, url: str = "") -> Serializer[Any]:
    """Serializer of ``kind`` (candle, dead_letter) for ``topic``: single-object, or Confluent with the
    schema registered under ``<topic>-value`` the way the connector registers its own (BACKWARD on a new
    subject, a stricter level kept, an unreachable registry waited for)."""
    schema = load_schema(kind)
    encode = fastavro_encoder(schema, _TO_DICT[kind])
    if framing == "single-object":
        return Serializer(schema, encode, single_object_frame(schema.fingerprint),
                          [(FINGERPRINT_HEADER, schema.fingerprint)])  # fmt: skip
    subject = f"{topic}-value"
    schema_id = register_value_schemas(registry, {subject: schema}, url)[subject]
    return Serializer(schema, encode, confluent_frame(schema_id), [])
