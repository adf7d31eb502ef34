"""Renders the tick layout of ``_layout.py``: the C header ``_layout.h``, and the tables of docs/protocol.md.

``python -m connector.kite._layout_gen header [DIR]`` writes ``_layout.h`` (into DIR, else beside this file);
hatch_build.py runs it before compiling, so a build never uses a stale layout. ``... docs [FILE]``
rewrites the generated part of docs/protocol.md. tests/unit/test_layout.py checks both are current.

The header holds data only, as X-macros the C code expands (so each use compiles to straight-line code):
what each packet kind carries, the Tick fields, the Avro fields in schema order, and the segment table.
"""

from __future__ import annotations

import sys
from pathlib import Path

from connector.kite._layout import (
    DEPTH_LEVEL,
    DEPTH_LEVEL_SIZE,
    DEPTH_LEVELS,
    FIELDS,
    MODES,
    PACKETS,
    RECORD,
    SEGMENTS,
    TICK_FIELDS,
    Column,
    Kind,
    carried,
    segment,
)

__all__ = ["DOCS_BEGIN", "DOCS_END", "HEADER", "render_docs", "render_header", "with_docs"]

HEADER = "_layout.h"
DOCS_BEGIN = "<!-- generated from connector/kite/_layout.py (python -m connector.kite._layout_gen docs) -->"
DOCS_END = "<!-- end of generated layout -->"

# Tick field and Avro field types → what the C code does with them (the macros it defines per name).
_C_TYPES = {
    "long": "LONG",
    "long?": "OPT_LONG",
    "timestamp-millis?": "OPT_LONG",
    "double": "DOUBLE",
    "double?": "OPT_DOUBLE",
    "Mode": "MODE",
    "boolean": "BOOL",
    "DepthLevel[]?": "DEPTH",
}
# Avro fields not written from a Tick field: the token's segment gives three, the receipt time one.
_DERIVED = {
    "exchange": "EXCHANGE",
    "segment": "SEGMENT",
    "price_divisor": "DIVISOR",
    "received_at": "RECEIVED",
}
# Most bytes an Avro value of each writer takes (a varint of a 64-bit value takes 10). A side of the depth
# is a union index, a block count, its levels (a double for the price, varints else) and the end of blocks.
_SIDE_BYTES = 1 + 10 + DEPTH_LEVELS * sum(8 if f.kind is Kind.PRICE else 10 for f in DEPTH_LEVEL) + 1
_MAX_BYTES = {"LONG": 10, "OPT_LONG": 11, "DOUBLE": 8, "OPT_DOUBLE": 9, "MODE": 1, "BOOL": 1, "SEGMENT": 2,
              "DIVISOR": 8, "RECEIVED": 10, "DEPTH_BUY": _SIDE_BYTES, "DEPTH_SELL": _SIDE_BYTES}  # fmt: skip


def _c(name: str) -> str:
    return name.upper()


def _macro(name: str, items: list[str]) -> list[str]:
    if not items:
        return [f"#define {name}(X)"]
    return [f"#define {name}(X) \\", *(f"    {item} \\" for item in items[:-1]), f"    {items[-1]}"]


def _writer(column: Column, seen: set[str]) -> str:
    if column.tick is None:
        return _DERIVED[column.name]
    kind = _C_TYPES[column.type]
    if kind == "DEPTH":  # depth_buy, then depth_sell: the two halves of Tick.depth
        kind = "DEPTH_SELL" if column.tick in seen else "DEPTH_BUY"
    seen.add(column.tick)
    return kind


def _tick_types() -> dict[str, str]:
    types: dict[str, str] = {}
    for column in RECORD:
        if column.tick is not None:
            types.setdefault(column.tick, _C_TYPES[column.type])
    return types


def render_header() -> str:
    """The text of ``_layout.h``."""
    out = [
        "/* Generated from connector/kite/_layout.py by connector/kite/_layout_gen.py: edit those, not this.",
        " * The build renders it again before compiling; tests/unit/test_layout.py fails on a stale copy. */",
        "#ifndef KITE_LAYOUT_H",
        "#define KITE_LAYOUT_H",
        "",
        "/* Modes, in the order of connector.kite.Mode and of the Avro enum's symbols. */",
        f"enum {{ {', '.join(f'KITE_MODE_{_c(m)}' for m in MODES)}, KITE_MODES }};",
        "#define KITE_MODE_NAMES {" + ", ".join(f'"{m}"' for m in MODES) + "}",
        "",
        "/* Packet kinds: X(KIND, length in bytes, mode). */",
        *_macro("KITE_PACKETS", [f"X({_c(p.name)}, {p.length}, KITE_MODE_{_c(p.mode)})" for p in PACKETS]),
        f"enum {{ {', '.join(f'KITE_PACKET_{_c(p.name)}' for p in PACKETS)}, KITE_PACKET_KINDS }};",
        f"#define KITE_MIN_PACKET {min(p.length for p in PACKETS)}",
        "",
        "/* The fields of connector.kite.Tick, in order: X(FIELD, type). */",
        *_macro("KITE_TICK_FIELDS", [f"X({_c(name)}, {kind})" for name, kind in _tick_types().items()]),
        f"enum {{ {', '.join(f'KITE_F_{_c(name)}' for name in TICK_FIELDS)}, KITE_F_COUNT }};",
        "",
        "/* What each packet kind carries that is read: X(FIELD, kind, offset). The i32 change of index",
        " * packets is never read, so it is not listed. */",
    ]
    for packet in PACKETS:
        read = [
            f"X({_c(f.tick)}, {_c(f.kind)}, {off})" for off, f in carried(packet) if f.kind is not Kind.I32
        ]
        out += _macro(f"KITE_PACKET_{_c(packet.name)}_FIELDS", read)
    out += [
        "",
        "/* The order book: levels a side, bytes a level, and a level's fields: X(FIELD, kind, offset, index",
        " * in the level's three entries of Tick.depth). */",
        f"#define KITE_DEPTH_LEVELS {DEPTH_LEVELS}",
        f"#define KITE_DEPTH_LEVEL_SIZE {DEPTH_LEVEL_SIZE}",
        f"#define KITE_DEPTH_LEVEL_FIELDS {len(DEPTH_LEVEL)}",
        *_macro("KITE_DEPTH_LEVEL", [f"X({_c(f.name)}, {_c(f.kind)}, {f.offset}, {i})"
                                     for i, f in enumerate(DEPTH_LEVEL)]),
        "",
        "/* The fields of schemas/tick.avsc, in order: X(writer, FIELD), FIELD being NONE for the fields",
        " * derived from the token's segment (EXCHANGE, SEGMENT, DIVISOR) or the receipt time (RECEIVED). */",
    ]  # fmt: skip
    seen: set[str] = set()
    writers = [(_writer(c, seen), _c(c.tick) if c.tick else "NONE") for c in RECORD]
    exchange_bytes = 1 + max(len(segment(code).exchange) for code in range(256))
    most = sum({**_MAX_BYTES, "EXCHANGE": exchange_bytes}[w] for w, _ in writers)
    out += [
        *_macro("KITE_RECORD", [f"X({w}, {f})" for w, f in writers]),
        f"#define KITE_RECORD_MAX_BYTES {most} /* with the depth of a packet */",
        "",
        "/* Exchange segments by code (the token's low byte): price divisor, tradable, exchange name. */",
        "typedef struct { double divisor; int tradable; int name_len; const char *name; } kite_segment;",
        "static const kite_segment KITE_SEGMENTS[256] = {",
    ]
    for code in range(256):
        s = segment(code)
        out.append(f'    {{{s.divisor!r}, {int(s.tradable)}, {len(s.exchange)}, "{s.exchange}"}},')
    out += ["};", "", "#endif", ""]
    return "\n".join(out)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def render_docs() -> str:
    """The generated tables of docs/protocol.md, between :data:`DOCS_BEGIN` and :data:`DOCS_END`."""
    spans = sorted({(off, off + f.kind.width) for f in FIELDS for off in f.offsets if off is not None})
    layout = []
    for start, end in spans:
        cells = []
        for i in range(len(PACKETS)):
            names = [f.name for f in FIELDS if f.offsets[i] == start and start + f.kind.width == end]
            cells.append(", ".join(names))
        layout.append([f"{start}\u2013{end}", *cells])
    fields = []
    for f in FIELDS:
        carriers = ", ".join(p.name for p, o in zip(PACKETS, f.offsets, strict=True) if o is not None)
        fields.append([f"`{f.name}`", f.kind.value, str(f.kind.width), carriers])
    level = [[f"`{f.name}`", f.kind.value, str(f.offset)] for f in DEPTH_LEVEL]
    segments = [
        [str(s.code), s.exchange, f"{s.divisor:,.0f}", "yes" if s.tradable else "no"] for s in SEGMENTS
    ]
    return "\n".join([
        DOCS_BEGIN,
        "",
        "Byte offsets of each packet kind (the length says which kind a packet is):",
        "",
        *_table(["bytes", *(f"{p.name} ({p.length}, {p.mode})" for p in PACKETS)], layout),
        "",
        "Kinds: `u32` unsigned 32-bit, `u16` unsigned 16-bit; `price` a `u32` of 1/divisor rupee; `time` a "
        "`u32` of epoch seconds; `i32` signed 32-bit (the index packets' change, which neither official "
        f"client reads, nor this codec); `depth` {DEPTH_LEVELS} buy levels then {DEPTH_LEVELS} sell levels.",
        "",
        *_table(["field", "kind", "bytes", "carried by"], fields),
        "",
        f"A depth level is {DEPTH_LEVEL_SIZE} bytes (the rest is padding):",
        "",
        *_table(["field", "kind", "offset"], level),
        "",
        "Exchange segments (`instrument_token & 0xff`); any other segment is tradable, divides by 100 and is "
        "named `SEGMENT_<code>`:",
        "",
        *_table(["segment", "exchange", "price divisor", "tradable"], segments),
        "",
        DOCS_END,
    ])  # fmt: skip


def with_docs(text: str) -> str:
    """``text`` (docs/protocol.md) with its generated part rendered again."""
    start, end = text.index(DOCS_BEGIN), text.index(DOCS_END) + len(DOCS_END)
    return text[:start] + render_docs() + text[end:]


def _write(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:  # unchanged files keep their time stamps
        path.write_text(text)


def main(argv: list[str]) -> int:
    if len(argv) in (1, 2) and argv[0] == "header":
        _write(Path(argv[1] if len(argv) == 2 else Path(__file__).parent) / HEADER, render_header())
        return 0
    if len(argv) in (1, 2) and argv[0] == "docs":
        docs = Path(argv[1]) if len(argv) == 2 else Path(__file__).parents[2] / "docs" / "protocol.md"
        _write(docs, with_docs(docs.read_text()))
        return 0
    print("usage: python -m connector.kite._layout_gen header [DIR] | docs [FILE]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
