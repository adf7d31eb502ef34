"""The native code against the Python reference, on random and mutated messages and records.

Mutations start from the real captured packets and from encoded messages; the C decoder, transcoder and
Tick encoder must give exactly what the Python code gives, or reject what it rejects in the same way. The
C arbiter must decide as the Python one on the same calls, and the transcoder arbitrating with either
must give what the Python transcoder gives, message after message, tick ids included.
Every test is bounded by its example count, so this runs in each unit run (a few seconds).
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import sysconfig
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hatch_build
from connector.arbiter import Arbiter, ArbiterPy, NativeArbiter
from connector.errors import SerializationError
from connector.kite import Mode, Tick, encode_message, packet_ids, parse_binary
from connector.kite._binary import _MODES, _native_decode, parse_binary_py
from connector.serde import build_serializers
from connector.serde._tick import encode_tick_py, native_encode_tick, tick_fault
from connector.serde._transcode import native_transcode, transcode_py
from tests.conftest import fixture_packet
from tests.unit.test_kite_codec import PACKET_LENGTHS, random_packet, raw_packets

needs_native = pytest.mark.skipif(
    _native_decode is None or native_encode_tick is None or native_transcode is None or NativeArbiter is None,
    reason="native extensions not built (no C compiler)",
)
ROOT = Path(__file__).resolve().parents[2]
PYTHON_SERIALIZER = replace(build_serializers().tick, encode=encode_tick_py)


def _seed_messages() -> list[bytes]:
    rng = random.Random(14)
    full, quote = fixture_packet("ticker_full"), fixture_packet("ticker_quote")
    singles = [random_packet(rng, length, seg) for length in PACKET_LENGTHS for seg in (1, 3, 6, 9)]
    return [
        encode_message([full]),
        encode_message([quote]),
        encode_message([full, quote, *singles[::3]]),
        *(encode_message([p]) for p in singles),
    ]


SEEDS = _seed_messages()


def _length_fields(message: bytes) -> list[int]:
    """Where the packet lengths of a well-formed message are."""
    offsets, off = [], 2
    for _ in range(message[0] << 8 | message[1]):
        offsets.append(off)
        off += 2 + (message[off] << 8 | message[off + 1])
    return offsets


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """Random bytes, or a real or encoded message with up to four mutations."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    base = draw(st.sampled_from(SEEDS) | st.lists(raw_packets, min_size=1, max_size=6).map(encode_message))
    data, lengths = bytearray(base), _length_fields(base)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(("byte", "insert", "delete", "truncate", "count", "length")))
        pos = draw(st.integers(0, len(data)))
        if op == "byte" and data:
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=12))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 12))]
        elif op == "truncate":
            del data[pos:]
        elif op == "count":
            data[0:2] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
        elif op == "length":
            at = draw(st.sampled_from(lengths))
            data[at : at + 2] = draw(st.sampled_from(PACKET_LENGTHS) | st.integers(0, 999)).to_bytes(2, "big")
    return bytes(data)


@needs_native
@given(messages())
@settings(max_examples=600, deadline=None)
def test_native_decoder_equals_python_on_mutated_messages(message: bytes) -> None:
    assert _native_decode is not None
    native = _native_decode(message, Tick, _MODES)
    ticks, errors = parse_binary_py(message)
    if native is None:  # left to the Python decoder, which must find a fault (or a heartbeat)
        assert errors or len(message) < 2
    else:
        assert not errors
        assert native == ticks
        assert [type(v) for t in native for v in t] == [type(v) for t in ticks for v in t]


def _tokens(message: bytes) -> list[int]:
    return [t.instrument_token for t in parse_binary_py(message)[0]]


@st.composite
def token_sets(draw: st.DrawFn, message: bytes) -> set[int] | frozenset[int] | None:
    """None (any token), or some of the message's tokens (all, all but some, none) and others."""
    if draw(st.booleans()):
        return None
    tokens = _tokens(message)
    kept = {t for t in tokens if draw(st.integers(0, 4))} if tokens else set()
    others = draw(st.sets(st.integers(0, 2**32 - 1), max_size=3))
    return kept | others if draw(st.booleans()) else frozenset(kept | others)


windows = st.sampled_from([0, 600_000, 2**62]) | st.integers(-5, 2**45)
# receipt times around the packets' exchange times (the seeds' are 2017-2030), or anywhere
receipts = st.integers(1_500_000_000_000, 1_900_000_000_000) | st.integers(-(2**45), 2**45)


@needs_native
@given(st.data(), messages(), receipts, windows)
@settings(max_examples=600, deadline=None)
def test_native_transcode_equals_the_python_reference_on_mutated_messages(
    data: st.DataObject, message: bytes, received: int, window: int
) -> None:
    """Every rule: well-formedness, the token filter, the record key and value, the timestamp window, the
    mode counts and the segment mask."""
    assert native_transcode is not None
    tokens = data.draw(token_sets(message))
    prefix = PYTHON_SERIALIZER.prefix
    assert native_transcode(message, received, prefix, window, tokens) == transcode_py(
        message, received, prefix, window, tokens
    )


@needs_native
@pytest.mark.parametrize("gap", [-601_000, -600_001, -600_000, -1, 0, 1, 600_000, 600_001])
@pytest.mark.parametrize("window", [-1, 0, 600_000])
def test_native_and_python_timestamp_windows_agree_at_their_edges(gap: int, window: int) -> None:
    message = encode_message([fixture_packet("ticker_full")])
    (tick,), _ = parse_binary_py(message)
    assert tick.exchange_timestamp_ms is not None and native_transcode is not None
    received = tick.exchange_timestamp_ms + gap
    native = native_transcode(message, received, b"", window, None)
    assert native is not None and native == transcode_py(message, received, b"", window, None)
    assert native[0][0][2] == (tick.exchange_timestamp_ms if window >= abs(gap) else received)


# Arbitration: a few instruments and ids, so that ids repeat, expire and are evicted; clocks that step
# back as well as forth (so that an instrument's ids are not in time order), and now and then jump
# anywhere in 64 bits. The calls come from a seeded random generator: long varied runs every example.
TOKENS = (408065, 2**32 - 1, 0, 884737)
TICK_IDS = (0, 1, 0xCBF43926, 2**32 - 1, 7, 8, 9)


@needs_native
@given(
    st.sampled_from([0, 10, 100, 1000, 5000, 2**63 - 1]) | st.integers(0, 4000),
    st.integers(1, 6) | st.just(256),
    st.randoms(use_true_random=False),
    st.integers(0, 400) | st.just(3000),
    st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_native_arbiter_decides_as_the_python_reference(
    window: int, per_token: int, rng: random.Random, calls: int, many: bool
) -> None:
    """``many``: ids from a pool three times ``per_token``, so that rings fill, their index wraps, ids are
    evicted and come back."""
    assert NativeArbiter is not None
    native, python = NativeArbiter(window, per_token), ArbiterPy(window, per_token)
    tokens = TOKENS[: rng.randint(1, len(TOKENS))]
    step = rng.choice([10, 1000, 4000] if not many else [1, 10, 1000])
    now = 1_764_000_000_000
    for _ in range(calls):
        now += rng.randint(-step, step)
        if rng.random() < 0.01:
            now = rng.randint(-(2**63), 2**63 - 1)
        now = max(-(2**63), min(now, 2**63 - 1))
        tick_id = rng.randrange(3 * per_token + 5) * 0x9E3779B1 % 2**32 if many else rng.choice(TICK_IDS)
        token = rng.choice(tokens)
        assert native.first(token, tick_id, now) == python.first(token, tick_id, now), (token, tick_id, now)


@st.composite
def line_feeds(draw: st.DrawFn) -> list[tuple[bytes, int, set[int] | None]]:
    """(message, receipt step, subscribed tokens) as lines bring them: packets of a few instruments, each in
    one or more messages (so in several lines' messages), now and then mutated or with a stray token. Some
    messages are longer than the block of packets whose ids the C transcoder takes at once."""
    pool = [
        struct.pack(">I", draw(st.sampled_from(TOKENS))) + draw(raw_packets)[4:]
        for _ in range(draw(st.integers(1, 10)))
    ]
    feeds = []
    for _ in range(draw(st.integers(1, 14))):
        packets = draw(st.integers(1, 6) | st.sampled_from([63, 64, 65, 128, 129]) | st.integers(60, 150))
        message = encode_message(draw(st.lists(st.sampled_from(pool), min_size=packets, max_size=packets)))
        if draw(st.integers(0, 7)) == 0:
            message = draw(messages().filter(bool)) if draw(st.booleans()) else message[:-1]
        subscribed = set(TOKENS[1:]) if draw(st.integers(0, 7)) == 0 else None  # token 0 is a stray then
        feeds.append((message, draw(st.integers(-1_000, 3_000)), subscribed))
    return feeds


def _arbiters(window: int, per_token: int) -> dict[str, Arbiter]:
    assert NativeArbiter is not None
    return {
        "python": ArbiterPy(window, per_token),
        "native": NativeArbiter(window, per_token),
        "python, called from C": ArbiterPy(window, per_token),
    }


@needs_native
@given(line_feeds(), st.integers(0, 4000), st.integers(1, 4) | st.just(256), st.booleans())
@settings(max_examples=400, deadline=None)
def test_native_transcode_arbitrates_as_the_python_reference_message_after_message(
    feeds: list[tuple[bytes, int, set[int] | None]], window: int, per_token: int, ids: bool
) -> None:
    """The same messages, at the same times, through the Python transcoder and arbiter, the C transcoder and
    arbiter, and the C transcoder calling the Python arbiter: the same records, counts and tick ids every
    time, so the same arbiter states. A message either refuses (malformed, a stray) arbitrates nothing."""
    assert native_transcode is not None
    arbiters = _arbiters(window, per_token)
    prefix, received = PYTHON_SERIALIZER.prefix, 1_764_000_000_000
    for message, step, subscribed in feeds:
        received += step
        python = transcode_py(message, received, prefix, 600_000, subscribed, arbiters["python"], ids)
        for name in ("native", "python, called from C"):
            native = native_transcode(message, received, prefix, 600_000, subscribed, arbiters[name], ids)
            assert native == python, name


@needs_native
@given(messages(), receipts, windows)
@settings(max_examples=300, deadline=None)
def test_native_tick_ids_are_the_crc32_of_each_packet(message: bytes, received: int, window: int) -> None:
    assert native_transcode is not None
    named = native_transcode(message, received, b"", window, None, None, True)
    plain = transcode_py(message, received, b"", window, None)
    if named is None or plain is None:
        assert named is None and plain is None
        return
    assert [r[3] for r in named[0]] == packet_ids(message)
    assert [r[:3] for r in named[0]] == plain[0] and named[1:] == plain[1:]


@needs_native
@pytest.mark.parametrize("fold", [False, True], ids=["tables", "folding where the CPU can"])
def test_native_tick_ids_are_the_crc32_with_and_without_folding(fold: bool) -> None:
    """Every packet length a message holds (LTP, quote, full, index), by the tables alone and folded."""
    from connector.serde._speedups import use_crc_fold

    assert native_transcode is not None
    before = use_crc_fold(fold)
    try:
        for message in SEEDS:
            named = native_transcode(message, 1_764_000_000_000, b"", 600_000, None, None, True)
            assert named is not None
            assert [r[3] for r in named[0]] == packet_ids(message)
    finally:
        use_crc_fold(before)


VALID_TICKS = [t for m in SEEDS for t in parse_binary_py(m)[0]]
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64, 2**1100]),
    st.floats(),
    st.text(max_size=6),
    st.binary(max_size=3),
    st.sampled_from([*Mode, "ltp", "full", "turbo"]),
    st.lists(st.integers(0, 9), max_size=6),
    st.lists(st.integers(0, 9), max_size=12).map(tuple),
)


@st.composite
def bad_ticks(draw: st.DrawFn) -> tuple[Tick, object]:
    """A real tick with up to three fields (or depth entries, or the receipt time) replaced by junk."""
    fields: list[object] = list(draw(st.sampled_from(VALID_TICKS)))
    received: object = 1_764_000_000_123
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, len(fields) + 1))
        if where < len(fields):
            fields[where] = draw(junk)
        elif where == len(fields) and isinstance(fields[-1], tuple) and fields[-1]:
            depth = list(fields[-1])
            depth[draw(st.integers(0, len(depth) - 1))] = draw(junk)
            fields[-1] = tuple(depth)
        else:
            received = draw(junk)
    return Tick(*fields), received  # type: ignore[arg-type]


def _outcome(encode: Callable[[Tick, int], bytes], tick: Tick, received: object) -> bytes | str:
    """The framed bytes, or the message of the SerializationError the tick serializer raises."""
    serializer = replace(PYTHON_SERIALIZER, encode=encode)
    try:
        return serializer(tick, received)  # type: ignore[arg-type]
    except SerializationError as exc:
        return f"SerializationError: {exc}"


@needs_native
@given(bad_ticks())
@settings(max_examples=800, deadline=None)
def test_native_and_python_tick_encoders_agree_on_mutated_ticks(case: tuple[Tick, object]) -> None:
    assert native_encode_tick is not None
    tick, received = case
    python = _outcome(encode_tick_py, tick, received)
    assert _outcome(native_encode_tick, tick, received) == python
    # a rejected tick is described by field (tick_fault), in the same words on both paths
    assert (tick_fault(tick, received) is None) == isinstance(python, bytes)


@needs_native
@pytest.mark.parametrize("buffer", [bytearray, memoryview], ids=lambda b: b.__name__)
def test_native_entry_points_take_bytes_only(buffer: Callable[[bytes], object]) -> None:
    assert _native_decode is not None and native_transcode is not None
    message = SEEDS[0]
    with pytest.raises(TypeError):
        _native_decode(buffer(message), Tick, _MODES)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        native_transcode(buffer(message), 1, b"", 0, None)  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        native_transcode(message, 1, buffer(b"\xc3\x01"), 0, None)  # type: ignore[call-overload]
    # parse_binary gives mutable buffers to the Python decoder instead
    assert parse_binary(buffer(message)) == parse_binary_py(message)  # type: ignore[arg-type]


@needs_native
def test_native_decoder_builds_tuple_subclasses_only() -> None:
    assert _native_decode is not None
    for cls, modes in ((int, _MODES), (Mode, _MODES), (Tick, _MODES[:2]), (Tick, list(_MODES))):
        with pytest.raises(TypeError):
            _native_decode(SEEDS[0], cls, modes)  # type: ignore[arg-type]


def test_build_honours_the_environment_and_keeps_position_independent_shared_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CFLAGS", "-DKITE_TEST_CFLAG")
    monkeypatch.setenv("CPPFLAGS", "-DKITE_TEST_CPPFLAG")
    monkeypatch.setenv("LDFLAGS", "-Wl,--kite-test")
    monkeypatch.setenv("CC", "kite-cc")
    monkeypatch.delenv("LDSHARED", raising=False)
    compile_ = hatch_build.compile_command("x.c", "x.o")
    link = hatch_build.link_command("x.o", "x.so")
    assert compile_[0] == "kite-cc" and link[0] == "kite-cc"
    assert {"-fPIC", "-Wall", "-Wextra", "-DKITE_TEST_CFLAG", "-DKITE_TEST_CPPFLAG"} <= set(compile_)
    assert compile_.index("-DKITE_TEST_CFLAG") > compile_.index("-Wextra")  # the user's flags come last
    assert "-shared" in link and link[-3:] == ["x.o", "-o", "x.so"] and "-Wl,--kite-test" in link
    python_cflags = (sysconfig.get_config_var("CFLAGS") or "").split()
    assert all(flag in compile_ for flag in python_cflags)


@pytest.mark.skipif(not shutil.which("cc"), reason="no C compiler")
@pytest.mark.parametrize("source", hatch_build.SOURCES)
def test_native_sources_compile_without_warnings(source: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "CFLAGS", "CPPFLAGS")}
    command = hatch_build.compile_command(str(ROOT / source), str(tmp_path / "x.o"))
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0 and done.stderr == "", done.stderr
