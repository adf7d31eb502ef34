from __future__ import annotations

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
