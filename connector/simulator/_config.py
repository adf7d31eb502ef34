"""The simulator's settings, as the server and the market fan-out read them (some may change at run time)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SimulatorConfig"]


@dataclass(slots=True)
class SimulatorConfig:
    api_key: str = "simulator"
    access_token: str = "simulator-token"
    api_secret: str = "simulator-secret"
    host: str = "127.0.0.1"
    port: int = 8765
    http_port: int | None = None  # login, instruments, orders and /control endpoints; None: off
    rate: float = 1.0  # ticks per second per subscribed instrument
    max_rate: float = 0.0  # ticks per second per connection in all; 0 = no cap
    packets_per_message: int = 50
    order_rate: float = 0.0  # new orders per second, each update sent on every connection
    jitter_ms: float = 0.0  # each connection delays each message by a random 0..jitter_ms of its own
    drop_every: float = 0.0  # seconds between forced disconnects; 0 = never
    malformed_probability: float = 0.0
    stall_every: float = 0.0  # seconds between stalls; 0 = never
    stall_seconds: float = 0.0
    fault_connections: tuple[int, ...] = ()  # connection numbers the faults above apply to; () = all
    seed: int = 0
    sent_log: str | None = None  # JSON lines of every record sent
    order_hide_every: int = 0  # >0: every Nth final order update is left out of the socket (GET /orders only)
    replay_ticks: int = 0  # >0: send this many pre-encoded ticks per connection, as fast as max_rate allows
