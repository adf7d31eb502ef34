"""The simulator's one market, fanned out to connections: no sockets, a fake monotonic clock."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest

from connector.kite import ClientRequest, Mode, OrderUpdate, Tick, encode_message, parse_binary, parse_text
from connector.simulator import Fanout, Market, Outgoing, SimulatorConfig, in_mode, synthetic_instruments
from connector.simulator import _fanout as _fanout_module
from connector.simulator._fanout import Repeats

INSTRUMENTS = synthetic_instruments(20)
TOKENS = [i.instrument_token for i in INSTRUMENTS]
WALL = 1_764_000_000.0


def _fanout(**config: object) -> Fanout:
    cfg = SimulatorConfig(**config)  # type: ignore[arg-type]
    return Fanout(Market(INSTRUMENTS, cfg.seed), cfg)


def _subscribe(fanout: Fanout, conn: int, tokens: list[int], mode: Mode | None = None) -> None:
    sub = fanout.subscribers.get(conn) or fanout.open(conn)
    assert fanout.apply(sub, ClientRequest("subscribe", tuple(tokens))) is None
    if mode is not None:
        assert fanout.apply(sub, ClientRequest("mode", tuple(tokens), mode)) is None


def _drain(fanout: Fanout, conn: int, now: float = float("inf")) -> list[Outgoing]:
    sub, out = fanout.subscribers[conn], []
    while (message := sub.pop_due(now)) is not None:
        out.append(message)
    return out


def _received(messages: list[Outgoing]) -> list[Tick]:
    """What a client decodes from the messages: the ticks as they travelled."""
    ticks: list[Tick] = []
    for m in messages:
        assert isinstance(m.data, bytes)
        decoded, errors = parse_binary(m.data)
        assert errors == []
        ticks += decoded
    return ticks


def test_one_tick_per_instrument_goes_to_every_subscriber_in_its_own_mode() -> None:
    fanout = _fanout()
    _subscribe(fanout, 1, TOKENS, Mode.QUOTE)
    _subscribe(fanout, 2, TOKENS[:10], Mode.FULL)
    _subscribe(fanout, 2, TOKENS[10:], Mode.LTP)
    assert fanout.cycle(0.0, WALL) == []
    quote, mixed = _drain(fanout, 1), _drain(fanout, 2)
    assert fanout.seq == len(TOKENS), "each instrument ticked once, not once per connection"
    by_seq = {seq: tick for m in quote for seq, tick in m.ticks}
    assert sorted(by_seq) == list(range(1, len(TOKENS) + 1))
    for m in mixed:
        for seq, tick in m.ticks:
            other = by_seq[seq]
            assert tick.instrument_token == other.instrument_token
            assert tick.last_price == other.last_price
            if tick.mode == Mode.FULL:
                assert in_mode(tick, Mode.QUOTE) == other
    assert _received(quote) == [t for m in quote for _, t in m.ticks], "the log says what travelled"
    assert {t.mode for t in _received(mixed)} == {Mode.FULL, Mode.LTP}


def test_a_token_subscribed_twice_is_delivered_once_and_lives_while_anyone_holds_it() -> None:
    fanout = _fanout()
    token, other = TOKENS[0], TOKENS[1]
    _subscribe(fanout, 1, [token, token])
    _subscribe(fanout, 1, [token, other])
    _subscribe(fanout, 2, [token])
    fanout.cycle(0.0, WALL)
    assert Counter(t.instrument_token for t in _received(_drain(fanout, 1))) == {token: 1, other: 1}
    assert fanout.seq == 2
    fanout.apply(fanout.subscribers[1], ClientRequest("unsubscribe", (token, token)))
    fanout.cycle(1.0, WALL)
    assert [t.instrument_token for t in _received(_drain(fanout, 1))] == [other]
    assert [t.instrument_token for t in _received(_drain(fanout, 2))] == [token, token]
    fanout.close(2)
    fanout.apply(fanout.subscribers[1], ClientRequest("unsubscribe", (other,)))
    assert not fanout.subscribed
    fanout.cycle(2.0, WALL)
    assert fanout.seq == 4, "nothing ticks that no connection holds"


def test_a_mode_change_on_one_connection_leaves_the_other_as_it_was() -> None:
    fanout = _fanout()
    _subscribe(fanout, 1, TOKENS[:3], Mode.FULL)
    _subscribe(fanout, 2, TOKENS[:3], Mode.FULL)
    fanout.apply(fanout.subscribers[2], ClientRequest("mode", tuple(TOKENS[:3]), Mode.LTP))
    fanout.cycle(0.0, WALL)
    assert {t.mode for t in _received(_drain(fanout, 1))} == {Mode.FULL}
    assert {t.mode for t in _received(_drain(fanout, 2))} == {Mode.LTP}


def test_3000_instruments_per_connection_and_not_one_more() -> None:
    market_size = synthetic_instruments(3005)
    cfg = SimulatorConfig()
    fanout = Fanout(Market(market_size, 0), cfg)
    sub = fanout.open(1)
    tokens = tuple(i.instrument_token for i in market_size)
    error = fanout.apply(sub, ClientRequest("subscribe", tokens))
    assert error is not None and "3000" in error.message
    assert len(sub.modes) == 3000
    assert fanout.apply(fanout.open(2), ClientRequest("subscribe", tokens[:3000])) is None


def test_jitter_delays_each_connection_on_its_own_and_never_reorders_one() -> None:
    fanout = _fanout(jitter_ms=40, packets_per_message=3, seed=9)
    _subscribe(fanout, 1, TOKENS)
    _subscribe(fanout, 2, TOKENS)
    for cycle in range(5):
        fanout.cycle(cycle * 0.01, WALL)
    a, b = _drain(fanout, 1), _drain(fanout, 2)
    for messages in (a, b):
        dues = [m.due for m in messages]
        assert dues == sorted(dues) and dues[0] >= 0 and dues[-1] <= 0.04 + 0.04
        per_token: dict[int, list[int]] = {}
        for tick in filter(lambda t: t.tradable, _received(messages)):
            per_token.setdefault(tick.instrument_token, []).append(tick.volume_traded or 0)
        assert all(x < y for volumes in per_token.values() for x, y in pairwise(volumes))
    assert [m.due for m in a] != [m.due for m in b]
    order_a = [t.instrument_token for t in _received(a)]
    order_b = [t.instrument_token for t in _received(b)]
    assert order_a != order_b and Counter(order_a) == Counter(order_b), "same ticks, own interleaving"


def test_faults_hit_only_the_connection_numbers_named_and_a_reconnect_keeps_its_number() -> None:
    fanout = _fanout(malformed_probability=1.0, fault_connections=(1,))
    _subscribe(fanout, 1, TOKENS[:3])
    _subscribe(fanout, 2, TOKENS[:3])
    assert (fanout.subscribers[1].slot, fanout.subscribers[2].slot) == (1, 2)
    assert fanout.subscribers[1].faulty and not fanout.subscribers[2].faulty
    fanout.cycle(0.0, WALL)
    fanout.order(Market(INSTRUMENTS).place_order(WALL), 0.0)
    broken, clean = _drain(fanout, 1), _drain(fanout, 2)
    assert all(m.malformed for m in broken) and not any(m.malformed for m in clean)
    tick_message, order_message = broken
    kinds = [kind for kind, _ in tick_message.sent()]
    assert kinds == ["malformed", "tick", "tick", "tick_undelivered"], "the cut packet never arrived"
    assert [kind for kind, _ in order_message.sent()] == ["malformed", "order_undelivered"]
    assert isinstance(parse_text(clean[1].data), OrderUpdate)
    fanout.close(1)
    again = fanout.open(3)
    assert again.slot == 1 and again.faulty, "the next connection takes number 1, and its faults"
    assert fanout.open(4).slot == 3


def test_order_updates_go_to_every_connection_with_the_same_text() -> None:
    fanout = _fanout()
    fanout.open(1)
    _subscribe(fanout, 2, TOKENS[:2])
    update = Market(INSTRUMENTS).place_order(WALL)
    fanout.order(update, 0.0)
    texts = [[m.data for m in _drain(fanout, conn)] for conn in (1, 2)]
    assert texts[0] == texts[1] and len(texts[0]) == 1
    assert parse_text(texts[0][0]) == update


def test_a_connection_too_far_behind_misses_ticks_and_they_are_logged_as_undelivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_fanout_module, "BACKLOG_TICKS", 100)
    fanout = _fanout(packets_per_message=len(TOKENS))
    _subscribe(fanout, 1, TOKENS)
    _subscribe(fanout, 2, TOKENS)
    cycles = 100 // len(TOKENS) + 3
    refused: list[tuple[int, Outgoing]] = []
    for n in range(cycles):
        refused += [(sub.conn, out) for sub, out in fanout.cycle(float(n), WALL)]
        _drain(fanout, 2)  # connection 2 keeps up; connection 1 reads nothing
    assert {conn for conn, _ in refused} == {1}
    assert 100 - len(TOKENS) < fanout.subscribers[1].queued_ticks <= 100
    lines = [line for _, out in refused for line in out.unsent("backlog")]
    assert {kind for kind, _ in lines} == {"tick_undelivered"}
    assert all(body["reason"] == "backlog" and body["seq"] > 0 for _, body in lines)
    queued = fanout.subscribers[1].queued_ticks
    assert sum(len(out.ticks) for out in fanout.close(1)) == queued, "what is left is handed back to log"


def test_same_seed_same_messages_and_times() -> None:
    def run() -> list[tuple[bytes | str, float]]:
        fanout = _fanout(jitter_ms=25, malformed_probability=0.3, seed=4)
        _subscribe(fanout, 1, TOKENS, Mode.FULL)
        _subscribe(fanout, 2, TOKENS)
        for n in range(3):
            fanout.cycle(float(n), WALL)
        return [(m.data, m.due) for conn in (1, 2) for m in _drain(fanout, conn)]

    assert run() == run()


def test_replay_connections_with_the_same_subscriptions_share_one_encoded_feed() -> None:
    fanout = _fanout(packets_per_message=7)
    _subscribe(fanout, 1, TOKENS, Mode.FULL)
    _subscribe(fanout, 2, TOKENS, Mode.FULL)
    _subscribe(fanout, 3, TOKENS[:5], Mode.FULL)
    feed = fanout.replay(fanout.subscribers[1], WALL)
    assert fanout.replay(fanout.subscribers[2], WALL) is feed
    assert fanout.replay(fanout.subscribers[3], WALL) is not feed
    assert sum(len(batch) for _, batch in feed) == 20 * len(TOKENS)
    assert all(data == encode_message(batch) for data, batch in feed)


def test_replay_repeats_are_new_ticks_made_once_for_every_connection() -> None:
    fanout = _fanout(packets_per_message=7)
    _subscribe(fanout, 1, TOKENS, Mode.FULL)
    _subscribe(fanout, 2, TOKENS, Mode.FULL)
    first = fanout.replay(fanout.subscribers[1], WALL)
    again = fanout.replay(fanout.subscribers[1], WALL, 3)
    assert fanout.replay(fanout.subscribers[2], WALL, 3) is again, "one repeat for both lines"
    for (data, batch), (moved, same) in zip(first, again, strict=True):
        ticks, _ = parse_binary(moved)
        assert same is batch and moved == Repeats(data).at(3)
        assert all(t != u for t, u in zip(ticks, batch, strict=True)), "each tick moved on: a new tick"
    for cycle in range(4, 8):
        fanout.replay(fanout.subscribers[1], WALL, cycle)
    assert fanout.replay(fanout.subscribers[2], WALL, 3) is not again, "older repeats are not kept"
    assert fanout.replay(fanout.subscribers[2], WALL, 3) == again


@pytest.mark.parametrize("mode", list(Mode))
def test_a_repeat_moves_one_field_of_each_packet_by_the_cycle_and_wraps_at_32_bits(mode: Mode) -> None:
    market = Market(INSTRUMENTS, seed=3)
    stocks = [t for t in TOKENS if t & 0xFF != 9]  # an index packet's layout has no volume: its price moves
    batch = [in_mode(market.advance(t, WALL), mode) for t in stocks[:9]]
    batch[4] = batch[4]._replace(volume_traded=2**32 - 2) if mode != Mode.LTP else batch[4]
    for cycle in (1, 3) if mode == Mode.LTP else (1, 3, 2**32 + 5):
        moved, errors = parse_binary(Repeats(encode_message(batch)).at(cycle))
        assert not errors
        for tick, was in zip(moved, batch, strict=True):
            if mode == Mode.LTP:  # an LTP packet has no volume: its price moves
                assert tick.last_price > was.last_price
                assert tick._replace(last_price=was.last_price) == was
            else:
                assert tick.volume_traded == ((was.volume_traded or 0) + cycle) & 0xFFFFFFFF
                assert tick._replace(volume_traded=was.volume_traded) == was


@pytest.mark.parametrize("mode", list(Mode))
def test_in_mode_is_exactly_what_a_packet_of_that_mode_carries(mode: Mode) -> None:
    market = Market(INSTRUMENTS, seed=2)
    ticks = [in_mode(market.advance(t, WALL), mode) for t in TOKENS]
    assert {t.mode for t in ticks} == {mode}
    assert parse_binary(encode_message(ticks)) == (ticks, [])
