"""Serialize the same full-mode ticks with the project's Avro encoder and with fastavro's schemaless_writer.

Run: python bench/serialize.py [ticks]. Checks the bytes are identical, prints both rates; the last line
is the speed-up (median rates). fastavro is given ready-made dicts, so only its writer is timed.
"""

from __future__ import annotations

import io
import sys

import fastavro
from _common import compare, full_ticks

from connector.serde import encode_tick, load_schema, tick_dict

RECEIVED = 1_764_000_000_123


def main() -> None:
    ticks = full_ticks(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
    schema = load_schema("tick").parsed
    dicts = [tick_dict(t, RECEIVED) for t in ticks]

    def reference(d: dict[str, object]) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, d)
        return buf.getvalue()

    assert all(encode_tick(t, RECEIVED) == reference(d) for t, d in zip(ticks, dicts, strict=True))

    def ours() -> int:
        for t in ticks:
            encode_tick(t, RECEIVED)
        return len(ticks)

    def theirs() -> int:
        for d in dicts:
            reference(d)
        return len(dicts)

    print(f"ticks: {len(ticks)} full-mode, byte-identical output checked")
    compare("ticks", "serialize_speedup_vs_fastavro", ("connector.serde", ours), ("fastavro", theirs))


if __name__ == "__main__":
    main()
