"""Shared by the benchmarks: realistic full-mode messages from the simulator's market, and a timer."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connector.kite import Mode, Tick, encode_message
from connector.simulator import Market, synthetic_instruments


def full_ticks(count: int, instruments: int = 1000, seed: int = 1) -> list[Tick]:
    market = Market(synthetic_instruments(instruments), seed)
    tokens = [i.instrument_token for i in market.instruments if i.instrument_token & 0xFF != 9]
    return [market.tick(tokens[n % len(tokens)], Mode.FULL, 1_764_000_000) for n in range(count)]


def full_messages(messages: int, packets: int = 50) -> list[bytes]:
    ticks = full_ticks(messages * packets)
    return [encode_message(ticks[i : i + packets]) for i in range(0, len(ticks), packets)]


def best_rate(work: Callable[[], int], rounds: int = 5) -> tuple[float, float]:
    """(median, best) items per second over ``rounds`` runs of ``work`` (which returns its item count)."""
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        n = work()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates), max(rates)


def compare(
    unit: str, figure: str, ours: tuple[str, Callable[[], int]], theirs: tuple[str, Callable[[], int]]
) -> None:
    """Times both sides, prints each rate (median, best) and, as the last line, ``figure=<ours/theirs>``."""
    rates = [(label, *best_rate(work)) for label, work in (ours, theirs)]
    for label, median, best in rates:
        print(f"{label:16} {median:12,.0f} {unit}/s (best {best:,.0f})")
    print(f"{figure}={rates[0][1] / rates[1][1]:.1f}")
