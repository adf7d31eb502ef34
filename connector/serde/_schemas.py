"""The Avro schemas of ``schemas/``: loaded and parsed once, with their fingerprints."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

__all__ = ["SCHEMA_FILES", "AvroSchema", "load_schema", "schema_dir"]

# Logical name → file in schemas/.
SCHEMA_FILES = {
    "tick": "tick.avsc",
    "order_update": "order_update.avsc",
    "dead_letter": "dead_letter.avsc",
    "candle": "candle.avsc",
    "gap": "gap.avsc",
}


class AvroSchema(NamedTuple):
    name: str  # full name, e.g. io.kitekafka.v1.Tick
    text: str  # the .avsc as written, for registries
    parsed: dict[str, Any]  # fastavro's parsed form
    canonical: str  # Parsing Canonical Form
    fingerprint: bytes  # CRC-64-AVRO of the canonical form, little-endian (single-object header order)


def schema_dir() -> Path:
    """``connector/schemas`` in an installed wheel; the repository's ``schemas/`` in a source checkout."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "schemas", here.parent / "schemas"):
        if (candidate / SCHEMA_FILES["tick"]).is_file():
            return candidate
    raise FileNotFoundError("Avro schemas not found beside the connector package (schemas/*.avsc)")


def parse_schema_text(text: str) -> AvroSchema:
    parsed = fastavro.parse_schema(json.loads(text))
    if not isinstance(parsed, dict):
        raise ValueError("a connector schema is an Avro record")
    canonical = to_parsing_canonical_form(parsed)
    return AvroSchema(
        parsed["name"], text, parsed, canonical, bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    )


@cache
def load_schema(kind: str) -> AvroSchema:
    """The current schema for ``kind`` (tick, order_update, dead_letter, candle, gap)."""
    return parse_schema_text((schema_dir() / SCHEMA_FILES[kind]).read_text())
