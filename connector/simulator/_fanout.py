"""One market, many connections, no I/O: each subscribed instrument's tick is made once per cycle and
queued on every connection that subscribes to it, in that connection's mode (as Kite does); each order
update is queued on every connection. Each connection has its own random stream for its delivery jitter,
its faults and the order in which it gets a cycle's instruments. The server sends what is due and logs
what each message carried, or that it never left."""

from __future__ import annotations

import itertools
import random
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from connector.kite import (
    MAX_TOKENS_PER_CONNECTION,
    ClientRequest,
    KiteError,
    Mode,
    OrderUpdate,
    Tick,
    encode_message,
    encode_packet,
    encode_text,
)
from connector.simulator._config import SimulatorConfig
from connector.simulator._market import Market, in_mode

__all__ = ["BACKLOG_TICKS", "Fanout", "LogLine", "Outgoing", "Subscriber"]

# Ticks queued for one connection at most: a connection that far behind (its client not reading, or a
# stall) misses the next ones, logged as undelivered, instead of holding the whole market back.
BACKLOG_TICKS = 50_000
REPLAY_ROUNDS = 20  # ticks of each instrument in the replay feed, repeated until the count is sent
_U16 = struct.Struct(">H")
Feed = list[tuple[bytes, tuple[Tick, ...]]]  # the replay's messages, each with its ticks
BROKEN_TEXT = '{"type": "order", "data": {broken'

LogLine = tuple[str, dict[str, Any]]  # (kind, body) of one sent-log line


def _undelivered(seq: int, tick: Tick, reason: str) -> LogLine:
    body: dict[str, Any] = {"seq": seq, "instrument_token": tick.instrument_token, "mode": str(tick.mode)}
    if tick.volume_traded is not None:
        body["volume_traded"] = tick.volume_traded
    return "tick_undelivered", {**body, "reason": reason}


@dataclass(slots=True)
class Outgoing:
    """One message queued for one connection: its bytes or text, when it may leave, what it carries."""

    data: bytes | str
    due: float  # monotonic time
    ticks: tuple[tuple[int, Tick], ...] = ()  # (market-wide seq, the tick as this connection gets it)
    order: OrderUpdate | None = None
    malformed: bool = False

    def sent(self) -> list[LogLine]:
        """Its log lines once sent. A malformed tick message is cut in its last packet: the client still
        decodes the others; a malformed order update delivers nothing."""
        if self.order is not None:
            if self.malformed:
                return [("malformed", {"text": True}), *self.unsent("malformed")]
            return [("order", self.order.to_json_dict())]
        lines = [("tick", {"seq": seq, **tick.to_json_dict()}) for seq, tick in self.ticks]
        if self.malformed:
            lines[-1] = _undelivered(*self.ticks[-1], "malformed")
            lines.insert(0, ("malformed", {"packets": len(self.ticks)}))
        return lines

    def unsent(self, reason: str) -> list[LogLine]:
        """Its log lines when it never left: closed, dropped, stopped, backlog (or malformed)."""
        if self.order is not None:
            return [("order_undelivered", {**self.order.to_json_dict(), "reason": reason})]
        return [_undelivered(seq, tick, reason) for seq, tick in self.ticks]


@dataclass(eq=False, slots=True)
class Subscriber:
    """One connection as the market sees it: its instruments and their modes, its own random stream
    and the messages queued for it, in the order they leave."""

    conn: int  # unique per connection, in the order they opened
    slot: int  # the lowest number from 1 no other open connection holds: a line that reconnects keeps it
    faulty: bool  # the fault knobs apply to it
    rng: random.Random
    modes: dict[int, Mode] = field(default_factory=dict)
    queue: deque[Outgoing] = field(default_factory=deque)
    queued_ticks: int = 0
    last_due: float = 0.0

    def next_due(self) -> float:
        return self.queue[0].due if self.queue else float("inf")

    def pop_due(self, now: float) -> Outgoing | None:
        if not self.queue or self.queue[0].due > now:
            return None
        out = self.queue.popleft()
        self.queued_ticks -= len(out.ticks)
        return out


class Fanout:
    """The subscriptions of every open connection and the one market clock's output for each of them."""

    def __init__(self, market: Market, config: SimulatorConfig) -> None:
        self.market, self.config = market, config
        self.subscribers: dict[int, Subscriber] = {}
        self.seq = 0  # ticks made so far: each tick's market-wide id
        self._holders: dict[int, int] = {}  # token → connections subscribed to it, in subscription order
        # The benchmark feed by subscriptions and cycle: the first cycle, and the latest ones moved on.
        self._replays: dict[tuple[tuple[tuple[int, Mode], ...], int], Feed] = {}
        self._repeats: dict[tuple[tuple[int, Mode], ...], list[Repeats]] = {}  # by subscriptions

    # -- connections and their requests ---------------------------------------------------------------
    def open(self, conn: int) -> Subscriber:
        taken = {s.slot for s in self.subscribers.values()}
        slot = next(n for n in itertools.count(1) if n not in taken)
        faulty = not self.config.fault_connections or slot in self.config.fault_connections
        # Its own stream: its jitter and faults change nothing of the market or of other connections.
        sub = Subscriber(conn, slot, faulty, random.Random(f"{self.config.seed}:{conn}"))
        self.subscribers[conn] = sub
        return sub

    def close(self, conn: int) -> list[Outgoing]:
        """Forget the connection; returns what was still queued for it (never sent)."""
        sub = self.subscribers.pop(conn)
        self._release(list(sub.modes))
        return list(sub.queue)

    def apply(self, sub: Subscriber, request: ClientRequest) -> KiteError | None:
        """Subscribe, unsubscribe or set the mode of (valid) tokens. A token subscribed again is still
        one subscription; past Kite's 3000 per connection the rest is refused with an error."""
        tokens = list(dict.fromkeys(request.tokens))
        if request.action == "unsubscribe":
            self._release([t for t in tokens if sub.modes.pop(t, None) is not None])
            return None
        new = [t for t in tokens if t not in sub.modes]
        room = MAX_TOKENS_PER_CONNECTION - len(sub.modes)
        error = None
        if len(new) > room:
            error = KiteError(f"more than {MAX_TOKENS_PER_CONNECTION} instruments")
            new = new[:room]
        for token in new:
            sub.modes[token] = Mode.QUOTE
            self._holders[token] = self._holders.get(token, 0) + 1
        if request.action == "mode" and request.mode is not None:
            for token in tokens:
                if token in sub.modes:
                    sub.modes[token] = request.mode
        return error

    def _release(self, tokens: list[int]) -> None:
        for token in tokens:
            self._holders[token] -= 1
            if not self._holders[token]:
                del self._holders[token]

    # -- the market's output --------------------------------------------------------------------------
    @property
    def subscribed(self) -> bool:
        return bool(self._holders)

    def interval(self) -> float:
        """Seconds between cycles: 1/rate, slower if a connection would get more than max_rate ticks/s."""
        cfg = self.config
        interval = 1 / cfg.rate if cfg.rate > 0 else 0.0
        if cfg.max_rate > 0:
            widest = max((len(s.modes) for s in self.subscribers.values()), default=0)
            interval = max(interval, widest / cfg.max_rate)
        return interval

    def idle(self) -> bool:
        """Whether a subscribed connection has nothing queued: with no interval, the market goes on as
        fast as its fastest connection takes it."""
        return any(not s.queue for s in self.subscribers.values() if s.modes)

    def cycle(self, now: float, wall: float) -> list[tuple[Subscriber, Outgoing]]:
        """One tick of every subscribed instrument, queued on each connection that holds it; returns the
        messages that connections too far behind could not take."""
        full = {t for s in self.subscribers.values() for t, m in s.modes.items() if m == Mode.FULL}
        made: dict[int, tuple[int, Tick]] = {}
        for token in self._holders:
            self.seq += 1
            made[token] = (self.seq, self.market.advance(token, wall, token in full))
        packets: dict[tuple[int, Mode], tuple[tuple[int, Tick], bytes]] = {}  # shared by connections
        refused: list[tuple[Subscriber, Outgoing]] = []
        size = max(1, self.config.packets_per_message)
        for sub in self.subscribers.values():
            picked = list(sub.modes.items())
            if self.config.jitter_ms > 0:
                sub.rng.shuffle(picked)  # its own interleaving of instruments; each instrument in order
            for i in range(0, len(picked), size):
                batch = [self._packet(packets, made, token, mode) for token, mode in picked[i : i + size]]
                ticks = tuple(tick for tick, _ in batch)
                out = self._queue(sub, now, encode_message([packet for _, packet in batch]), ticks)
                if out is not None:
                    refused.append((sub, out))
        return refused

    @staticmethod
    def _packet(
        packets: dict[tuple[int, Mode], tuple[tuple[int, Tick], bytes]],
        made: dict[int, tuple[int, Tick]],
        token: int,
        mode: Mode,
    ) -> tuple[tuple[int, Tick], bytes]:
        hit = packets.get((token, mode))
        if hit is None:
            seq, full = made[token]
            view = in_mode(full, mode)
            hit = packets[token, mode] = ((seq, view), encode_packet(view))
        return hit

    def order(self, update: OrderUpdate, now: float) -> None:
        """Kite sends a user's order updates on every connection of that user: the same text on each."""
        text = encode_text(update)
        for sub in self.subscribers.values():
            self._queue(sub, now, text, order=update)

    def _queue(
        self,
        sub: Subscriber,
        now: float,
        data: bytes | str,
        ticks: tuple[tuple[int, Tick], ...] = (),
        order: OrderUpdate | None = None,
    ) -> Outgoing | None:
        """Queue one message, delayed by its jitter but never before the one ahead of it; returns it
        instead when the connection's backlog is full (order updates always fit)."""
        cfg = self.config
        if ticks and sub.queued_ticks + len(ticks) > BACKLOG_TICKS:
            return Outgoing(data, now, ticks, order)
        malformed = (
            sub.faulty and cfg.malformed_probability > 0 and sub.rng.random() < cfg.malformed_probability
        )
        if malformed:
            # A tick message cut short breaks only its last packet; a broken text breaks the update.
            data = data[:-3] if isinstance(data, bytes) else BROKEN_TEXT
        due = now + sub.rng.uniform(0, cfg.jitter_ms) / 1000 if cfg.jitter_ms > 0 else now
        sub.last_due = due = max(due, sub.last_due)
        sub.queue.append(Outgoing(data, due, ticks, order, malformed))
        sub.queued_ticks += len(ticks)
        return None

    def replay(self, sub: Subscriber, wall: float, cycle: int = 0) -> Feed:
        """The benchmark feed for this connection's instruments and modes, in its ``cycle``-th repeat (each
        tick moved on by ``cycle``: see :class:`Repeats`). Encoded once and shared by every connection with
        the same subscriptions, so each gets the same sequence and the source costs the same for any
        number of lines. Repeats older than the one before ``cycle`` are forgotten (the connections of a
        replay are about a repeat apart; one that lags further behind has its repeat made again)."""
        key = tuple(sub.modes.items())
        messages = self._replays.get((key, cycle))
        if messages is not None:
            return messages
        if cycle:
            first = self.replay(sub, wall)
            repeats = self._repeats.get(key)
            if repeats is None:
                repeats = self._repeats[key] = [Repeats(data) for data, _ in first]
            messages = [(r.at(cycle), batch) for r, (_, batch) in zip(repeats, first, strict=True)]
            for old in [k for k in self._replays if k[0] == key and 0 < k[1] < cycle - 1]:
                del self._replays[old]
        else:
            ticks = [in_mode(self.market.advance(t, wall), m) for _ in range(REPLAY_ROUNDS) for t, m in key]
            size = max(1, self.config.packets_per_message)
            batches = [tuple(ticks[i : i + size]) for i in range(0, len(ticks), size)]
            messages = [(encode_message(batch), batch) for batch in batches]
        self._replays[key, cycle] = messages
        return messages


class Repeats:
    """One message of the benchmark feed, to be moved on by any ``cycle``: :meth:`at` is the message with
    each tick moved on by ``cycle`` (more volume; a higher price for an LTP packet), so that a repeat of the
    feed is new ticks, as lines arbitrating by content must see them.

    The replay sends a repeat of its whole feed every 20 ticks of each instrument. Moving each packet on
    field by field made the simulator's CPU per tick 2.7 times what sending alone costs, on the cores the
    connector and Kafka share in a benchmark; so the message's layout is read once, into a struct format
    of the bytes between the fields that move and those fields, and a repeat is two C calls.
    """

    __slots__ = ("_layout", "_parts")

    def __init__(self, message: bytes) -> None:
        fmt, off, end = [">"], 2, 0
        for _ in range(_U16.unpack_from(message)[0]):
            length = _U16.unpack_from(message, off)[0]
            at = off + 2 + (16 if length >= 44 else 4)  # volume_traded of quote/full; last_price of LTP
            fmt.append(f"{at - end}sI")
            end, off = at + 4, off + 2 + length
        fmt.append(f"{len(message) - end}s")
        self._layout = struct.Struct("".join(fmt))
        self._parts = self._layout.unpack(message)  # bytes, field, bytes, field, ..., bytes

    def at(self, cycle: int) -> bytes:
        parts = list(self._parts)
        parts[1::2] = [(value + cycle) & 0xFFFFFFFF for value in parts[1::2]]
        return self._layout.pack(*parts)
