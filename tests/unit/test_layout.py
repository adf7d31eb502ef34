"""The tick layout is declared once (connector/kite/_layout.py): everything derived from it must agree.

Fails when the generated C header or the tables of docs/protocol.md are stale, when the declared record
differs from schemas/tick.avsc or the Tick fields from connector.kite.Tick, when the table contradicts
itself, or when the C and the Python code read any packet (captured fixtures, every segment, random
messages) differently.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hatch_build
from connector.kite import DepthLevel, Mode, Tick, encode_message, exchanges_of
from connector.kite._binary import _MODES, _native_decode, packet_struct, parse_binary_py
from connector.kite._layout import (
    DEPTH_LEVEL,
    DEPTH_LEVEL_SIZE,
    FIELDS,
    MODES,
    PACKETS,
    RECORD,
    SEGMENTS,
    TICK_FIELDS,
    Kind,
    carried,
)
from connector.kite._layout_gen import HEADER, with_docs
from connector.serde import build_serializers, schema_dir
from connector.serde._transcode import native_transcode, transcode_py
from tests.conftest import FIXTURES, fixture_packet
from tests.unit.test_kite_codec import random_packet

ROOT = Path(__file__).resolve().parents[2]
KITE = ROOT / "connector" / "kite"
needs_native = pytest.mark.skipif(
    _native_decode is None or native_transcode is None, reason="native extensions not built (no C compiler)"
)


def test_the_committed_header_is_what_the_layout_renders(tmp_path: Path) -> None:
    """Rendered into a temporary directory the way the build renders it, byte for byte."""
    subprocess.run([sys.executable, "-m", *hatch_build.LAYOUT_HEADER, str(tmp_path)], cwd=ROOT, check=True)
    assert (tmp_path / HEADER).read_text() == (KITE / HEADER).read_text(), (
        "connector/kite/_layout.h is stale: run python -m connector.kite._layout_gen header"
    )


def test_the_build_renders_a_stale_header_again(tmp_path: Path) -> None:
    shutil.copytree(
        ROOT / "connector", tmp_path / "connector", ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    stale = tmp_path / "connector" / "kite" / HEADER
    stale.write_text("/* stale */\n")
    hatch_build.render_layout(tmp_path)
    assert stale.read_text() == (KITE / HEADER).read_text()


def test_the_protocol_document_shows_the_layout() -> None:
    text = (ROOT / "docs" / "protocol.md").read_text()
    assert with_docs(text) == text, "docs/protocol.md is stale: run python -m connector.kite._layout_gen docs"


def _short(avro_type: Any) -> str:
    """A field type of tick.avsc in the layout's short form: ``long?``, ``Mode``, ``DepthLevel[]?`` ..."""
    if isinstance(avro_type, list):
        assert avro_type[0] == "null" and len(avro_type) == 2
        return _short(avro_type[1]) + "?"
    if isinstance(avro_type, dict):
        if avro_type["type"] == "array":
            return _short(avro_type["items"]) + "[]"
        return str(avro_type.get("logicalType") or avro_type.get("name") or avro_type["type"])
    return str(avro_type)


def test_the_record_is_schemas_tick_avsc_field_for_field() -> None:
    schema = json.loads((schema_dir() / "tick.avsc").read_text())
    assert [(f["name"], _short(f["type"])) for f in schema["fields"]] == [(c.name, c.type) for c in RECORD]
    fields = {f["name"]: f["type"] for f in schema["fields"]}
    assert fields["mode"]["symbols"] == list(MODES)
    level = fields["depth_buy"][1]["items"]["fields"]
    avro = {Kind.U32: "long", Kind.U16: "long", Kind.PRICE: "double"}
    assert [(f["name"], f["type"]) for f in level] == [(f.name, avro[f.kind]) for f in DEPTH_LEVEL]


def test_the_python_records_have_the_declared_fields() -> None:
    assert Tick._fields == TICK_FIELDS
    assert DepthLevel._fields == tuple(f.name for f in DEPTH_LEVEL)
    assert tuple(Mode) == _MODES and tuple(m.value for m in Mode) == MODES
    assert {f.tick for f in FIELDS if f.kind is not Kind.I32} <= set(TICK_FIELDS)


def test_the_layout_is_consistent() -> None:
    assert len({p.length for p in PACKETS}) == len(PACKETS), "the length alone tells the kinds apart"
    token = FIELDS[0]  # the C code (kite_token) reads it from a packet's first four bytes
    assert token.name == "instrument_token" and token.kind is Kind.U32 and set(token.offsets) == {0}
    assert {p.mode for p in PACKETS} == set(MODES)
    assert all(len(f.offsets) == len(PACKETS) for f in FIELDS)
    for packet in PACKETS:
        end = 0
        for off, f in carried(packet):
            assert off >= end, f"{f.name} overlaps the field before it in {packet.name}"
            end = off + f.kind.width
        assert end <= packet.length and packet_struct(packet).size == packet.length
    level_end = 0
    for item in DEPTH_LEVEL:
        assert item.offset >= level_end
        level_end = item.offset + item.kind.width
    assert level_end <= DEPTH_LEVEL_SIZE
    codes = [s.code for s in SEGMENTS]
    assert len(set(codes)) == len(codes) and all(0 <= c < 256 for c in codes)
    assert all(0 < len(s.exchange) < 64 and s.divisor > 0 for s in SEGMENTS)  # one-byte Avro length


def _message_agrees(message: bytes, received: int = 1_764_000_000_123) -> None:
    """The C decoder and transcoder give exactly what the Python ones give."""
    assert _native_decode is not None and native_transcode is not None
    ticks, errors = parse_binary_py(message)
    assert not errors
    native = _native_decode(message, Tick, _MODES)
    assert native == ticks
    assert [type(v) for t in native or () for v in t] == [type(v) for t in ticks for v in t]
    prefix = build_serializers().tick.prefix
    for window, tokens in ((600_000, None), (2**62, {t.instrument_token for t in ticks}), (-1, set())):
        assert native_transcode(message, received, prefix, window, tokens) == transcode_py(
            message, received, prefix, window, tokens
        )


@needs_native
@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.packet")))
def test_c_and_python_agree_on_each_captured_packet(name: str) -> None:
    _message_agrees(encode_message([fixture_packet(name)]))


@needs_native
@pytest.mark.parametrize("packet", PACKETS, ids=lambda p: p.name)
def test_c_and_python_agree_on_every_segment(packet: Any) -> None:
    """Each of the 256 segment codes (the table's and the others) in a packet of each kind."""
    rng = random.Random(packet.length)
    packets = [random_packet(rng, packet.length, segment) for segment in range(256)]
    for i in range(0, 256, 32):
        _message_agrees(encode_message(packets[i : i + 32]))


@needs_native
@given(st.lists(st.tuples(st.integers(0, 2**32), st.sampled_from(PACKETS), st.integers(0, 255)), max_size=8))
@settings(max_examples=300, deadline=None)
def test_c_and_python_agree_on_random_messages(specs: list[tuple[int, Any, int]]) -> None:
    _message_agrees(encode_message([random_packet(random.Random(s), p.length, seg) for s, p, seg in specs]))


def test_the_segment_mask_names_the_exchanges_of_a_message() -> None:
    packets = [
        fixture_packet("ticker_full"),
        random_packet(random.Random(1), 8, 9),
        random_packet(random.Random(2), 8, 200),
    ]
    done = transcode_py(encode_message(packets), 1, b"", 0, None)
    assert done is not None
    assert done[4] == 1 << 1 | 1 << 9 | 1 << 200
    assert exchanges_of(done[4]) == ("NSE", "INDICES", "SEGMENT_200")
