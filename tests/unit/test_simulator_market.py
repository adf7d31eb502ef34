from __future__ import annotations

from itertools import pairwise

from connector.kite import Mode, encode_message, parse_binary
from connector.simulator import Market, bundled_instruments, synthetic_instruments


def test_same_seed_same_ticks_and_every_segment_round_trips() -> None:
    instruments = bundled_instruments() + synthetic_instruments(20)
    a, b = Market(instruments, seed=7), Market(instruments, seed=7)
    tokens = [i.instrument_token for i in instruments]
    for mode in Mode:
        ticks_a = [a.tick(t, mode, 1_764_000_000) for t in tokens]
        assert ticks_a == [b.tick(t, mode, 1_764_000_000) for t in tokens]
        decoded, errors = parse_binary(encode_message(ticks_a))
        assert errors == [] and decoded == ticks_a, "simulated prices sit exactly on the wire grid"
    assert {t & 0xFF for t in tokens} >= {1, 2, 3, 4, 7, 9}


def test_orders_move_from_open_to_a_final_status() -> None:
    market = Market(bundled_instruments(), seed=3)
    opened = [market.place_order(100.0) for _ in range(30)]
    assert {o.status for o in opened} == {"OPEN"}
    finals = list(market.due_orders(200.0))
    assert sorted(o.order_id for o in finals) == sorted(o.order_id for o in opened)
    assert {o.status for o in finals} <= {"COMPLETE", "REJECTED", "CANCELLED"} and len(
        {o.status for o in finals}
    ) > 1


def test_any_token_streams_by_its_segment_with_monotonic_volume_and_time() -> None:
    market = Market(bundled_instruments(), seed=5)
    token = 131169028  # a BSE token (low byte 4) that is not in the bundled CSV
    assert not market.knows(token) and market.ensure(token)
    times = [1_764_000_010, 1_764_000_005, 1_764_000_005, 1_764_000_011]  # the clock steps back once
    ticks = [market.tick(token, Mode.FULL, now) for now in times]
    decoded, errors = parse_binary(encode_message(ticks))
    assert errors == [] and decoded == ticks, "BSE prices (divisor 100) sit exactly on the wire grid"
    volumes = [t.volume_traded or 0 for t in ticks]
    assert all(a < b for a, b in pairwise(volumes)), "daily volume is cumulative"
    stamps = [t.exchange_timestamp_ms or 0 for t in ticks]
    assert stamps == sorted(stamps) and stamps[-1] == 1_764_000_011_000, "exchange time never goes back"
    assert market.states[token].instrument.exchange == "BSE"


def test_tokens_of_every_segment_and_non_tokens() -> None:
    market = Market([], seed=1)
    for segment in (1, 2, 3, 4, 5, 6, 7, 8, 9, 12):
        token = 777 << 8 | segment
        assert market.ensure(token)
        tick = market.tick(token, Mode.QUOTE, 1_764_000_000)
        assert parse_binary(encode_message([tick])) == ([tick], [])
    assert not market.ensure(0) and not market.ensure(777 << 8 | 10) and not market.ensure(2**32)
    alone = Market([], seed=1)
    alone.ensure(888 << 8 | 2)
    market.ensure(888 << 8 | 2)  # after ten others
    assert market.states[888 << 8 | 2].price == alone.states[888 << 8 | 2].price, (
        "a token's start price depends on the seed only, not on what else was subscribed"
    )


def test_order_book_holds_each_order_in_its_latest_state() -> None:
    market = Market(bundled_instruments(), seed=3)
    opened = [market.place_order(100.0) for _ in range(10)]
    assert {u.status for u in market.order_book.values()} == {"OPEN"}
    finals = {u.order_id: u for u in market.due_orders(200.0)}
    assert set(market.order_book) == {o.order_id for o in opened}
    assert market.order_book == finals
