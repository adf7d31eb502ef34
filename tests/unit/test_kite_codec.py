"""The Kite codec against real captured packets, against the official client, and against itself."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import struct
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.errors import MalformedFrame
from connector.kite import (
    ClientRequest,
    KiteError,
    KiteMessage,
    Mode,
    OrderUpdate,
    Tick,
    encode_message,
    encode_packet,
    encode_text,
    mode_message,
    parse_binary,
    parse_client_message,
    parse_text,
    subscribe_message,
    unsubscribe_message,
)
from connector.kite._binary import NATIVE_DECODER, parse_binary_py
from tests.conftest import fixture_json, fixture_packet, plain_times

PACKET_LENGTHS = (8, 28, 32, 44, 184)
SEGMENTS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 12)


def _epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def _assert_matches_fixture(tick: Tick, expected: dict[str, Any]) -> None:
    assert tick.instrument_token == expected["instrument_token"]
    assert tick.mode == expected["mode"]
    assert tick.tradable is expected["tradable"]
    assert tick.last_price == expected["last_price"]
    assert tick.last_traded_quantity == expected["last_quantity"]
    assert tick.average_traded_price == expected["average_price"]
    assert tick.volume_traded == expected["volume"]
    assert tick.total_buy_quantity == expected["buy_quantity"]
    assert tick.total_sell_quantity == expected["sell_quantity"]
    assert (tick.open, tick.high, tick.low, tick.close) == tuple(
        expected["ohlc"][k] for k in ("open", "high", "low", "close")
    )


def test_real_full_packet_decodes_to_its_expected_values() -> None:
    expected = fixture_json("ticker_full.json")
    ticks, errors = parse_binary(encode_message([fixture_packet("ticker_full")]))
    assert errors == []
    (tick,) = ticks
    _assert_matches_fixture(tick, expected)
    assert tick.net_change == expected["change"]
    assert tick.change_percent == pytest.approx(expected["change"] * 100 / expected["ohlc"]["close"])
    assert tick.last_trade_time_ms == _epoch(expected["last_trade_time"])
    assert tick.exchange_timestamp_ms == _epoch(expected["timestamp"])
    assert tick.exchange_timestamp is not None and tick.exchange_timestamp.utcoffset() is not None
    assert (tick.oi, tick.oi_day_high, tick.oi_day_low) == (0, 0, 0)
    assert [lvl._asdict() for lvl in tick.depth_buy or ()] == expected["depth"]["buy"]
    assert [lvl._asdict() for lvl in tick.depth_sell or ()] == expected["depth"]["sell"]
    assert tick.exchange == "NSE"


def test_real_quote_packet_decodes_to_its_expected_values() -> None:
    expected = fixture_json("ticker_quote.json")
    (tick,), errors = parse_binary(encode_message([fixture_packet("ticker_quote")]))
    assert errors == []
    _assert_matches_fixture(tick, expected)
    # The fixture's "change" (5.90) is the full packet's; this packet's last - close is 1573.15 - 1567.8.
    assert tick.net_change == pytest.approx(1573.15 - 1567.8)
    assert tick.depth is None and tick.depth_buy is None and tick.exchange_timestamp_ms is None


def test_real_packets_encode_back_to_the_same_bytes() -> None:
    for name in ("ticker_full", "ticker_quote"):
        raw = fixture_packet(name)
        (tick,), _ = parse_binary(encode_message([raw]))
        assert encode_packet(tick) == raw


def test_ltp_fixture_round_trips() -> None:
    expected = fixture_json("ticker_ltp.json")
    tick = Tick(expected["instrument_token"], Mode.LTP, True, expected["last_price"])
    (decoded,), _ = parse_binary(encode_message([tick]))
    assert decoded == tick
    assert decoded.to_kiteconnect() == expected


def random_packet(rng: random.Random, length: int, segment: int) -> bytes:
    token = rng.randrange(1, 1 << 24) << 8 | segment
    body = bytearray(rng.randbytes(length - 4))
    if length in (32, 184):  # realistic epoch seconds so the official client can build datetimes
        for off in (24,) if length == 32 else (40, 56):
            body[off : off + 4] = struct.pack(">I", rng.randrange(1_500_000_000, 1_900_000_000))
    return struct.pack(">I", token) + bytes(body)


def test_differential_against_official_kiteconnect_decoder() -> None:
    kiteconnect = pytest.importorskip("kiteconnect")
    official = kiteconnect.KiteTicker("api_key", "access_token")
    rng = random.Random(20261126)
    checked = 0
    for _ in range(3000):
        packets = [
            random_packet(rng, rng.choice(PACKET_LENGTHS), rng.choice(SEGMENTS))
            for _ in range(rng.randint(1, 6))
        ]
        message = encode_message(packets)
        ours, errors = parse_binary(message)
        assert errors == []
        theirs = official._parse_binary(message)
        assert [plain_times(t.to_kiteconnect()) for t in ours] == [plain_times(t) for t in theirs]
        checked += len(packets)
    assert checked > 8000


raw_packets = st.builds(
    lambda seed, length, segment: random_packet(random.Random(seed), length, segment),
    st.integers(0, 2**32),
    st.sampled_from(PACKET_LENGTHS),
    st.sampled_from(SEGMENTS),
)


@given(st.lists(raw_packets, min_size=1, max_size=8))
@settings(max_examples=300, deadline=None)
def test_encode_then_decode_gives_the_same_ticks(packets: list[bytes]) -> None:
    ticks, _ = parse_binary(encode_message(packets))
    again, errors = parse_binary(encode_message(ticks))
    assert errors == []
    assert again == ticks


def test_heartbeat_yields_nothing() -> None:
    assert parse_binary(b"\x00") == ([], [])
    assert parse_binary(b"") == ([], [])


def test_one_bad_packet_keeps_the_good_ones() -> None:
    good = fixture_packet("ticker_quote")
    message = encode_message([good, b"\x00" * 13, good])
    ticks, errors = parse_binary(message)
    assert len(ticks) == 2
    (error,) = errors
    assert isinstance(error, MalformedFrame)
    assert "unknown packet length 13" in str(error)
    assert error.raw == message


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"\x00\x02\x00\x08" + b"\x00" * 8, "before its packet count"),
        (b"\x00\x01\x00\x2c" + b"\x00" * 10, "runs past the end"),
        (b"\x00\x01\x00\x08" + b"\x00" * 9, "after the last packet"),
    ],
)
def test_malformed_framing_is_reported_with_the_raw_bytes(message: bytes, reason: str) -> None:
    _, errors = parse_binary(message)
    assert len(errors) == 1
    assert reason in errors[0].reason
    assert errors[0].raw == message


@given(st.binary(max_size=600))
@settings(max_examples=2000, deadline=None)
def test_fuzz_random_bytes_never_raise(data: bytes) -> None:
    _ticks, errors = parse_binary(data)
    assert all(isinstance(e, MalformedFrame) for e in errors)
    with contextlib.suppress(MalformedFrame):
        parse_text(data)


@given(st.data())
@settings(max_examples=1000, deadline=None)
def test_fuzz_mutated_messages_never_raise(data: st.DataObject) -> None:
    message = bytearray(encode_message([fixture_packet("ticker_full"), fixture_packet("ticker_quote")]))
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(message) - 1))
        message[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(message)))
    mutated = bytes(message[:cut])
    ticks, errors = parse_binary(mutated)
    for error in errors:  # each fault says where it is, and keeps the message for its dead letter
        assert isinstance(error, MalformedFrame) and error.raw == mutated
        assert error.offset is None or 0 <= error.offset <= len(mutated)
    declared = int.from_bytes(mutated[:2], "big") if len(mutated) >= 2 else 0
    assert len(ticks) <= declared, "no more ticks than the packets the message says it holds"


def test_order_update_keeps_every_field(postback: dict[str, Any]) -> None:
    body = {**postback, "tags": ["a", "b"], "auction_number": None}
    update = parse_text(json.dumps({"type": "order", "data": body}))
    assert isinstance(update, OrderUpdate)
    assert update.order_id == "220303000308932" and update.status == "COMPLETE"
    assert update.instrument_token == 779521 and update.average_price == 470.0
    # "2022-03-03 09:24:25" in IST is 03:54:25 UTC
    assert update.order_timestamp_ms == _epoch("2022-03-03T03:54:25+00:00")
    assert update.extra == {"tags": '["a", "b"]', "auction_number": "null"}
    assert update.to_json_dict()["tags"] == ["a", "b"]
    assert parse_text(encode_text(update)) == update
    as_sent = json.loads(encode_text(update))["data"]
    assert as_sent == body


def test_error_and_message_frames() -> None:
    assert parse_text('{"type": "error", "data": "Invalid token"}') == KiteError("Invalid token")
    assert parse_text(b'{"type": "message", "data": "hello"}') == KiteMessage("hello")
    assert parse_text(encode_text(KiteError("x"))) == KiteError("x")


@pytest.mark.parametrize(
    "text",
    [
        b"{not json",
        b"[1, 2]",
        b'{"type": "bogus"}',
        b'{"type": "order", "data": {"status": "OPEN"}}',
        b"\xff\xfe",
    ],
)
def test_bad_text_raises_malformed_frame_with_raw_bytes(text: bytes) -> None:
    with pytest.raises(MalformedFrame) as info:
        parse_text(text)
    assert info.value.raw == text


def test_client_messages_round_trip() -> None:
    assert json.loads(subscribe_message([256265, 408065])) == {"a": "subscribe", "v": [256265, 408065]}
    assert json.loads(mode_message(Mode.FULL, [256265])) == {"a": "mode", "v": ["full", [256265]]}
    assert parse_client_message(unsubscribe_message([1])) == ClientRequest("unsubscribe", (1,))
    assert parse_client_message(mode_message("ltp", [5, 6])) == ClientRequest("mode", (5, 6), Mode.LTP)
    for bad in ('{"a": "mode", "v": ["turbo", [1]]}', '{"a": "subscribe", "v": ["x"]}', "{}", "nope"):
        with pytest.raises(MalformedFrame):
            parse_client_message(bad)


@pytest.mark.skipif(not NATIVE_DECODER, reason="native decoder not built (no C compiler)")
@given(st.lists(raw_packets, min_size=0, max_size=10), st.binary(max_size=3))
@settings(max_examples=800, deadline=None)
def test_native_decoder_equals_the_python_decoder(packets: list[bytes], tail: bytes) -> None:
    for message in (encode_message(packets), encode_message(packets) + tail):
        ours, errors = parse_binary(message)
        reference, reference_errors = parse_binary_py(message)
        assert ours == reference
        assert [type(v) for t in ours for v in t] == [type(v) for t in reference for v in t]
        assert [e.reason for e in errors] == [e.reason for e in reference_errors]


def test_native_decoder_is_built_where_a_compiler_exists() -> None:
    if shutil.which("cc") and not os.environ.get("KITE_NO_SPEEDUPS"):
        assert NATIVE_DECODER, "hatch_build.py should have compiled connector/kite/_native.c"
