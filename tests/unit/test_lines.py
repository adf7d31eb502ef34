"""Lines: tick ids, arbitration (first arrival wins), gap markers, and the connection limit."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from datetime import datetime

import pytest

from connector.app import shard
from connector.arbiter import MAX_PER_TOKEN, Arbiter, ArbiterPy, NativeArbiter, new_arbiter
from connector.errors import ConfigError
from connector.gaps import GapWatch, market_open_during
from connector.kite import Mode, encode_message, packet_ids
from connector.market import IST, MarketCalendar
from tests.conftest import fixture_packet


def test_packet_ids_are_the_crc32_of_each_packet_and_none_for_bad_framing() -> None:
    full, quote = fixture_packet("ticker_full"), fixture_packet("ticker_quote")
    message = encode_message([full, quote])
    assert packet_ids(message) == [zlib.crc32(full), zlib.crc32(quote)]
    assert packet_ids(b"\x00") == [] and packet_ids(message + b"x") is None
    assert packet_ids(message[:-1]) is None


ARBITERS: list[Callable[[int, int], Arbiter]] = [ArbiterPy, *([NativeArbiter] if NativeArbiter else [])]


def _name(make: object) -> str:
    return "python" if make is ArbiterPy else "native"


@pytest.mark.parametrize("make", ARBITERS, ids=_name)
def test_a_tick_wins_once_within_the_window_and_memory_is_bounded(
    make: Callable[[int, int], Arbiter],
) -> None:
    arbiter = make(1000, 3)
    assert arbiter.first(1, 10, 0) and not arbiter.first(1, 10, 5), "the copy from the other line loses"
    assert arbiter.first(2, 10, 5), "the same id of another instrument is another tick"
    assert arbiter.first(1, 10, 2000), "outside the window, the same content is a new tick"
    for tick_id in (11, 12, 13):
        assert arbiter.first(1, tick_id, 2001)
    assert arbiter.first(1, 10, 2002), "evicted: at most per_token ids are remembered per instrument"
    assert (arbiter.window_ms, arbiter.per_token) == (1000, 3)


@pytest.mark.parametrize("make", ARBITERS, ids=_name)
def test_an_arbiter_needs_a_window_and_room_for_one_id_to_2_24(make: Callable[[int, int], Arbiter]) -> None:
    for window_ms, per_token in ((-1, 1), (0, 0), (0, MAX_PER_TOKEN + 1)):
        with pytest.raises(ValueError, match=r"window_ms must be >= 0 and per_token in 1\.\.16777216"):
            make(window_ms, per_token)
    assert make(0, 1).first(1, 1, 0) and make(0, MAX_PER_TOKEN).first(1, 1, 0)


def test_the_shards_arbiter_is_the_native_one_where_it_is_built() -> None:
    arbiter = new_arbiter()
    assert type(arbiter) is (NativeArbiter or ArbiterPy)
    assert (arbiter.window_ms, arbiter.per_token) == (5000, 256)
    if NativeArbiter is not None:  # ids are CRC-32s and tokens 32-bit: the C one takes nothing wider
        with pytest.raises(OverflowError, match=r"tick_id must be in 0\.\.2"):
            arbiter.first(1, 2**32, 0)
        with pytest.raises(OverflowError, match=r"token must be in 0\.\.2"):
            arbiter.first(-1, 1, 0)
        with pytest.raises(TypeError):
            arbiter.first(1, 1)  # type: ignore[call-arg]


def test_gap_watch_needs_a_silence_longer_than_the_threshold_while_the_market_is_open() -> None:
    closed = GapWatch(0, lambda: [1], 2.0, open_during=lambda start, end: False)
    assert closed.message(0) is None and closed.message(10_000) is None, "market closed: no gap"
    watch = GapWatch(3, lambda: [5, 6], 2.0)
    assert watch.message(0) is None and watch.message(2000) is None
    gap = watch.message(4001)
    assert gap is not None and (gap.shard, gap.start_ms, gap.end_ms) == (3, 2000, 4001)
    assert gap.cause == "no message on any line"
    restarted = GapWatch(0, lambda: [1], 2.0, last_ms=1000)
    gap = restarted.message(60_000)
    assert gap is not None and gap.cause == "connector restarted" and gap.start_ms == 1000


def test_a_gap_counts_only_while_an_exchange_of_the_shard_trades() -> None:
    calendar = MarketCalendar()
    nse, mcx, unknown = 408065, (0x200004 << 8) | 7, (0x200005 << 8) | 12
    open_during = market_open_during(calendar, lambda: [nse])
    friday = datetime(2026, 12, 4, tzinfo=IST)

    def at(hour: int, minute: int) -> float:
        return friday.replace(hour=hour, minute=minute).timestamp()

    assert open_during(at(10, 0), at(10, 1)), "NSE trades at 10:00 IST"
    assert not open_during(at(16, 0), at(17, 0)), "and not after 15:30"
    assert open_during(at(15, 29), at(16, 0)), "a gap that starts before the close counts"
    assert market_open_during(calendar, lambda: [nse, mcx])(at(16, 0), at(17, 0)), "MCX trades until 23:30"
    saturday = friday.replace(day=5, hour=11).timestamp()
    assert not open_during(saturday, saturday + 60), "no session on a Saturday"
    assert market_open_during(calendar, lambda: [unknown])(saturday, saturday + 60), "unknown: reported"


def test_lines_count_against_kites_three_connections() -> None:
    subscriptions = {t: Mode.FULL for t in range(3000)}
    assert len(shard(subscriptions, lines=2)) == 1
    with pytest.raises(ConfigError, match=r"3001 instruments on 2 line\(s\) need 4 connections"):
        shard({t: Mode.FULL for t in range(3001)}, lines=2)
    with pytest.raises(ConfigError, match="at most 3000 instruments with KITE_LINES=3"):
        shard({t: Mode.FULL for t in range(3001)}, lines=3)
