"""Serializers: byte-identical to fastavro, framed, and read back by independent readers."""

from __future__ import annotations

import io
import json
import math
import os
import random
import shutil
import struct
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import avro.io
import avro.schema
import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.errors import ConfigError, SerializationError
from connector.kite import Mode, OrderUpdate, Tick, encode_message, parse_binary, parse_text
from connector.serde import (
    FINGERPRINT_HEADER,
    AvroReader,
    DeadLetter,
    build_serializers,
    encode_tick,
    fastavro_encoder,
    load_schema,
    order_update_dict,
    schema_dir,
    split_frame,
    tick_dict,
)
from connector.serde._tick import NATIVE, encode_tick_py, native_encode_tick
from connector.serde._transcode import Transcoder, native_transcode, transcode_py
from tests.conftest import fixture_packet, plain_times
from tests.unit.test_kite_codec import PACKET_LENGTHS, SEGMENTS, random_packet, raw_packets

RECEIVED = 1_764_000_000_123
reference_tick = fastavro_encoder(load_schema("tick"), tick_dict)


def _ticks_of_every_kind() -> list[Tick]:
    rng = random.Random(7)
    packets = [fixture_packet("ticker_full"), fixture_packet("ticker_quote")]
    packets += [random_packet(rng, length, seg) for length in PACKET_LENGTHS for seg in SEGMENTS]
    ticks, errors = parse_binary(encode_message(packets))
    assert not errors
    return ticks


def _order(postback: dict[str, Any]) -> OrderUpdate:
    update = parse_text(json.dumps({"type": "order", "data": {**postback, "tags": ["x"]}}))
    assert isinstance(update, OrderUpdate)
    return update


def _apache_read(kind: str, body: bytes) -> Any:
    schema = avro.schema.parse((schema_dir() / f"{kind}.avsc").read_text())
    return avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(body)))


def test_every_packet_kind_round_trips_through_both_readers() -> None:
    serializers, reader = build_serializers(), AvroReader()
    for tick in _ticks_of_every_kind():
        data = serializers.tick(tick, RECEIVED)
        name, values = reader.read(data)
        expected = tick_dict(tick, RECEIVED)
        assert name == "Tick"
        assert plain_times(values) == expected
        assert plain_times(_apache_read("tick", bytes(split_frame(data).body))) == expected


def test_order_update_round_trips_with_extras(postback: dict[str, Any]) -> None:
    update = _order(postback)
    data = build_serializers().order_update(update, RECEIVED)
    name, values = AvroReader().read(data)
    assert name == "OrderUpdate"
    assert plain_times(values) == order_update_dict(update, RECEIVED)
    assert values["extra"] == {"tags": '["x"]'}
    assert plain_times(_apache_read("order_update", bytes(split_frame(data).body))) == order_update_dict(
        update, RECEIVED
    )


def test_dead_letter_round_trips() -> None:
    letter = DeadLetter(b"\x00\x01\xff", "unknown packet length 1", "ws-binary", 2)
    name, values = AvroReader().read(build_serializers().dead_letter(letter, RECEIVED))
    assert name == "DeadLetter"
    assert values["raw"] == b"\x00\x01\xff" and values["offset"] == 2


def test_single_object_framing_carries_the_fingerprint() -> None:
    ser = build_serializers().tick
    schema = load_schema("tick")
    data = ser(_ticks_of_every_kind()[0], RECEIVED)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == schema.fingerprint
    assert ser.headers == [(FINGERPRINT_HEADER, schema.fingerprint)]


def test_bad_bytes_and_bad_config_say_what_is_wrong() -> None:
    with pytest.raises(SerializationError, match="invalid magic byte"):
        AvroReader().read(b"\x7bjson")
    with pytest.raises(SerializationError, match="unknown schema fingerprint"):
        AvroReader().read(b"\xc3\x01" + b"\x00" * 12)
    with pytest.raises(ConfigError, match="SCHEMA_REGISTRY_URL"):
        build_serializers("confluent")
    with pytest.raises(ConfigError, match="KAFKA_FRAMING"):
        build_serializers("protobuf")
    with pytest.raises(SerializationError):
        build_serializers().tick(Tick(2**70, Mode.LTP, True, 1.0), RECEIVED)


u32 = st.integers(0, 2**32 - 1)
edge_floats = st.one_of(
    st.floats(allow_nan=False), st.sampled_from([0.0, -0.0, math.inf, -math.inf, 1e-300, 2**53 + 1.0])
)
opt_u32, opt_f = st.none() | u32, st.none() | edge_floats
opt_ms = st.none() | st.integers(0, 2**32 * 1000)
depth = st.none() | st.lists(st.integers(0, 2**32 - 1), min_size=30, max_size=30).map(tuple)
ticks = st.builds(
    Tick,
    st.integers(0, 2**32 - 1),
    st.sampled_from(list(Mode)),
    st.booleans(),
    edge_floats,
    opt_u32, opt_f, opt_u32, opt_u32, opt_u32, opt_f, opt_f, opt_f, opt_f, opt_f, opt_f,
    opt_ms, opt_u32, opt_u32, opt_u32, opt_ms,
    depth,
)  # fmt: skip


ENCODERS: list[Callable[[Tick, int], bytes]] = [encode_tick_py]
if native_encode_tick is not None:
    ENCODERS.append(native_encode_tick)


@pytest.mark.parametrize("encoder", ENCODERS, ids=lambda e: "native" if e is not encode_tick_py else "python")
@given(tick=ticks, received=st.integers(-(2**62), 2**62))
@settings(max_examples=1500, deadline=None)
def test_fast_tick_encoders_are_byte_identical_to_fastavro(
    encoder: Callable[[Tick, int], bytes], tick: Tick, received: int
) -> None:
    assert encoder(tick, received) == reference_tick(tick, received)


@pytest.mark.parametrize("encoder", ENCODERS, ids=lambda e: "native" if e is not encode_tick_py else "python")
def test_fast_tick_encoders_reject_what_fastavro_rejects(encoder: Callable[[Tick, int], bytes]) -> None:
    not_a_price: Any = "x"
    bad_ticks = [
        Tick(2**70, Mode.LTP, True, 1.0),
        Tick(1, Mode.LTP, True, not_a_price),
        Tick(1, Mode.QUOTE, True, 1.0, 2**64),
    ]
    for bad in bad_ticks:
        with pytest.raises((OverflowError, TypeError, ValueError, struct.error)):
            encoder(bad, RECEIVED)


def _bad(*fields: Any, **named: Any) -> Tick:
    return Tick(*fields, **named)


BAD_TICKS = [  # (tick, the fault its SerializationError names)
    (_bad(1, "turbo", True, 1.0), "mode: 'turbo' is not ltp, quote or full"),
    (_bad(1, None, True, 1.0), "mode: None is not ltp, quote or full"),
    (_bad(2**70, Mode.LTP, True, 1.0), "instrument_token: 1180591620717411303424 is not a 64-bit integer"),
    (_bad(1, Mode.LTP, True, "x"), "last_price: 'x' is not a number that fits a double"),
    (_bad(1, Mode.QUOTE, True, 1.0, -(2**64)), "last_traded_quantity: -18446744073709551616 is not a 64-bit"),
    (_bad(1, Mode.QUOTE, True, 1.0, volume_traded=1.5), "volume_traded: 1.5 is not a 64-bit integer"),
    (_bad(1, Mode.FULL, True, 1.0, depth=[0] * 30), "depth: a list, not a tuple"),
    (_bad(1, Mode.FULL, True, 1.0, depth=(0, "p", 0) * 10), "depth: item 1: 'p' is not a number"),
]


@pytest.mark.parametrize(("tick", "fault"), BAD_TICKS)
def test_both_tick_encoders_give_the_same_serialization_error(tick: Tick, fault: str) -> None:
    """What the pipeline dead-letters (a SerializationError) does not depend on which encoder ran."""
    serializer = build_serializers().tick
    for encoder in ENCODERS:
        with pytest.raises(SerializationError) as info:
            replace(serializer, encode=encoder)(tick, RECEIVED)
        assert str(info.value).startswith(f"io.kitekafka.v1.Tick: cannot write Tick: {fault}")


def test_native_encoder_is_built_where_a_compiler_exists() -> None:
    if shutil.which("cc") and not os.environ.get("KITE_NO_SPEEDUPS"):
        assert NATIVE, "hatch_build.py should have compiled connector/serde/_speedups.c"


def test_fastavro_reads_what_the_fast_encoder_wrote() -> None:
    schema = load_schema("tick").parsed
    for tick in _ticks_of_every_kind():
        values = fastavro.schemaless_reader(io.BytesIO(encode_tick(tick, RECEIVED)), schema, None)
        assert plain_times(values) == tick_dict(tick, RECEIVED)


TRANSCODERS: list[Transcoder] = [transcode_py, *([native_transcode] if native_transcode is not None else [])]


@pytest.mark.parametrize("transcode", TRANSCODERS, ids=lambda t: "python" if t is transcode_py else "native")
@given(st.lists(raw_packets, min_size=1, max_size=12), st.integers(0, 2**45))
@settings(max_examples=400, deadline=None)
def test_transcode_equals_decode_then_serialize(
    transcode: Transcoder, packets: list[bytes], received: int
) -> None:
    serializer = build_serializers().tick
    message = encode_message(packets)
    ticks, _ = parse_binary(message)
    done = transcode(message, received, serializer.prefix, 2**62, None)  # any exchange time is taken
    assert done is not None
    records, ltp, quote, full, segments = done
    # the same (key, value, timestamp) the generic path of the pipeline produces
    assert records == [
        (str(t.instrument_token).encode(), serializer(t, received), t.exchange_timestamp_ms or received)
        for t in ticks
    ]
    assert (ltp, quote, full) == tuple(sum(1 for t in ticks if t.mode == m) for m in ("ltp", "quote", "full"))
    assert segments == sum({1 << t.segment for t in ticks})


@pytest.mark.parametrize("transcode", TRANSCODERS, ids=lambda t: "python" if t is transcode_py else "native")
@given(st.binary(max_size=400))
@settings(max_examples=500, deadline=None)
def test_transcode_leaves_anything_malformed_to_the_generic_path(transcode: Transcoder, data: bytes) -> None:
    ticks, errors = parse_binary(data)
    done = transcode(data, 1, b"\xc3\x01" + b"\x00" * 8, 600_000, None)
    if errors or not ticks:
        assert done is None
    else:
        assert done is not None and len(done[0]) == len(ticks)
