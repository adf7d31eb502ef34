"""The candle core against a plain reference: same bars, same late ticks, and checkpoints change nothing;
the processor's transaction error handling, blindness, health and metrics."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException
from confluent_kafka.schema_registry import SchemaRegistryClient
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.candles._bars import (
    DAY_MS,
    IST_OFFSET_MS,
    Candle,
    GapSpan,
    Interval,
    PartitionBars,
    bar_start,
    parse_intervals,
)
from connector.candles._decode import TickDecoder, facts_of
from connector.candles._metrics import CandleMetrics
from connector.candles._processor import check_sample
from connector.candles._status import BlindWatch, Counts, ProcessorFailed, Status
from connector.candles._txn import AbortRequired, TransactionCalls
from connector.errors import ConfigError, RegistryError, SerializationError
from connector.kite import Mode
from connector.kite import Tick as KiteTick
from connector.serde import AvroReader, DeadLetter, build_serializers
from tests.unit.test_serde import ticks as serde_ticks

_registry = SchemaRegistryClient.new_client({"url": "mock://candles-test"})
# confluent-kafka's mock has no compatibility endpoints; registration sets BACKWARD on new subjects.
_registry.set_compatibility = lambda subject_name=None, level=None: level or ""  # type: ignore[method-assign]
_confluent = build_serializers("confluent", registry_client=_registry)

# Two minutes before an IST midnight: streams cross a day boundary, where volume counters restart.
MIDNIGHT = 20_000 * DAY_MS - IST_OFFSET_MS
BASE = MIDNIGHT - 120_000

Tick = tuple[int, int, float, int | None, int | None]  # token, event time, price, cumulative volume, oi
Event = tuple[str, Any]  # ("tick", Tick), ("idle", wall clock ms) or ("gap", GapSpan)
BarKey = tuple[str, int, int]  # label, start, token


def _overlaps(span: GapSpan, start: int, end: int) -> bool:
    return span.start < end and start < span.end


def reference(
    events: list[Event], intervals: tuple[Interval, ...], grace: int
) -> tuple[list[Candle], list[tuple[int, tuple[str, ...]]]]:
    """Bars (amendments included) and late ticks straight from the definition, with lists and sorting."""
    ticks: dict[BarKey, list[tuple[int, int, float, int | None, int | None]]] = {}
    closed: list[tuple[str, int, int, str]] = []  # label, start, token, how
    late: list[tuple[int, tuple[str, ...]]] = []
    seen: int | None = None
    spans: list[GapSpan] = []
    flagged: set[BarKey] = set()
    amended: list[BarKey] = []
    ms_of = {i.label: i.ms for i in intervals}

    def gap(span: GapSpan) -> None:
        spans.append(span)
        for label, start, token in list(ticks):
            if token in span.tokens and _overlaps(span, start, start + ms_of[label]):
                done = [c for c in closed if c[0] == label and c[2] == token]
                if (label, start, token) not in {c[:3] for c in done}:
                    flagged.add((label, start, token))  # open
                elif max(c[1] for c in done) == start and (label, start, token) not in flagged:
                    flagged.add((label, start, token))  # the instrument's last closed bar
                    amended.append((label, start, token))

    def close(wm: int, how: str) -> None:
        for label, start, token in sorted(ticks, key=lambda k: (k[1], k[2])):
            ms = next(i.ms for i in intervals if i.label == label)
            if (
                start + ms <= wm
                and (label, start, token, "watermark") not in closed
                and not any(c[:3] == (label, start, token) for c in closed)
            ):
                closed.append((label, start, token, how))

    for n, (kind, what) in enumerate(events):
        if kind == "tick":
            token, t, price, volume, oi = what
            wm = -(1 << 62) if seen is None else seen - grace
            too_late = []
            for iv in intervals:
                start = bar_start(t, iv.ms)
                if start + iv.ms <= wm:
                    too_late.append(iv.label)
                    continue
                if (iv.label, start, token) not in ticks and any(
                    token in g.tokens and _overlaps(g, start, start + iv.ms) for g in spans
                ):
                    flagged.add((iv.label, start, token))
                ticks.setdefault((iv.label, start, token), []).append((t, n, price, volume, oi))
            if too_late:
                late.append((n, tuple(too_late)))
            if seen is None or t > seen:
                seen = t
                close(seen - grace, "watermark")
        elif kind == "gap":
            gap(what)
        elif seen is not None and what > seen and len(closed) < len(ticks):
            seen = what
            close(seen - grace, "idle")
    bars = []
    last_volume: dict[tuple[str, int], tuple[int, int]] = {}
    for label, start, token, how in sorted(closed, key=lambda c: (c[1], c[0], c[2])):
        ms = next(i.ms for i in intervals if i.label == label)
        rows = sorted(ticks[(label, start, token)], key=lambda r: (r[0], r[1]))
        volumes = [r[3] for r in rows if r[3] is not None]
        ois = [r[4] for r in rows if r[4] is not None]
        volume = None
        if volumes:
            day, before = (start + IST_OFFSET_MS) // DAY_MS, last_volume.get((label, token))
            if before is None:
                volume = max(volumes) - min(volumes)
            elif before[1] != day or max(volumes) < before[0]:
                volume = max(volumes)
            else:
                volume = max(volumes) - before[0]
            last_volume[(label, token)] = (max(volumes), day)
        prices = [r[2] for r in rows]
        bar = Candle(token, label, start, start + ms, rows[0][2], max(prices), min(prices), rows[-1][2],
                     volume, len(rows), ois[-1] if ois else None, rows[0][0], rows[-1][0], how,
                     (label, start, token) in flagged)  # fmt: skip
        if (label, start, token) in amended:  # unflagged when it closed, then written again
            bars += [bar._replace(gap=False), bar._replace(revision=1)]
        else:
            bars.append(bar)
    return bars, late


def _ordered(bars: list[Candle]) -> list[Candle]:
    return sorted(bars, key=lambda c: (c.start, c.interval, c.instrument_token, c.revision))


def run(
    events: list[Event], intervals: tuple[Interval, ...], grace: int, checkpoint_every: int = 0
) -> tuple[list[Candle], list[tuple[int, tuple[str, ...]]]]:
    """The core over ``events``; with ``checkpoint_every``, rebuilt from its JSON checkpoint that often."""
    core = PartitionBars(intervals, grace)
    bars: list[Candle] = []
    late: list[tuple[int, tuple[str, ...]]] = []
    tokens: set[int] = set()
    spans: list[GapSpan] = []
    for n, (kind, what) in enumerate(events):
        if kind == "tick":
            tokens.add(what[0])
            too_late = core.add(*what)
            if too_late:
                late.append((n, too_late))
        elif kind == "gap":
            spans.append(what)
            core.gap(what)
        else:
            core.advance(what)
        bars += core.closed
        core.closed.clear()
        if checkpoint_every and n % checkpoint_every == 0:
            saved = json.dumps([core.snapshot(), {t: core.token_state(t) for t in tokens}])
            core = PartitionBars(intervals, grace)
            snap, per_token = json.loads(saved)
            core.restore(snap)
            for token, state in per_token.items():
                core.restore_token(int(token), state)
            for span in spans:  # as the shell reads the markers again
                core.gap(span)
    return _ordered(bars), late


@st.composite
def streams(draw: st.DrawFn) -> list[Event]:
    events: list[Event] = []
    clock = BASE
    volumes = {1: 1000, 2: 0, 3: 50}
    for _ in range(draw(st.integers(1, 120))):
        clock += draw(st.integers(0, 4000))
        if draw(st.integers(0, 30)) == 0:
            events.append(("idle", clock + draw(st.integers(0, 90_000))))
            continue
        if draw(st.integers(0, 12)) == 0:  # a marker, often of a silence already over (bars closed)
            start = clock - draw(st.sampled_from([0, 1000, 5000, 30_000, 90_000]))
            tokens = frozenset(draw(st.sets(st.sampled_from([1, 2, 3]), min_size=1)))
            events.append(("gap", GapSpan(start, start + draw(st.integers(1, 70_000)), tokens)))
            continue
        token = draw(st.sampled_from([1, 2, 3]))
        t = clock - draw(st.sampled_from([0, 0, 0, 300, 1500, 20_000, 70_000]))  # out of order, late
        if (t + IST_OFFSET_MS) % DAY_MS < 60_000 and draw(st.booleans()):
            volumes[token] = draw(st.integers(0, 30))  # a new day's counter
        volumes[token] += draw(st.integers(0, 500))
        volume = None if token == 3 and draw(st.booleans()) else volumes[token]
        oi = draw(st.one_of(st.none(), st.integers(0, 10**6)))
        price = draw(st.sampled_from([100.0, 100.05, 99.95, 101.5, 98.0]))
        events.append(("tick", (token, t, price, volume, oi)))
    return events


INTERVAL_SETS = ["1s", "5s,1m", "1m", "10s,1m,5m,1h,1d"]


@settings(max_examples=300, deadline=None)
@given(streams(), st.sampled_from(INTERVAL_SETS), st.sampled_from([0, 500, 2000, 30_000]))
def test_core_equals_reference(events: list[Event], spec: str, grace: int) -> None:
    intervals = parse_intervals(spec)
    want_bars, want_late = reference(events, intervals, grace)
    got_bars, got_late = run(events, intervals, grace)
    assert got_late == want_late
    assert got_bars == _ordered(want_bars)


@settings(max_examples=200, deadline=None)
@given(streams(), st.sampled_from(INTERVAL_SETS), st.integers(1, 7))
def test_checkpoint_and_restore_change_nothing(events: list[Event], spec: str, every: int) -> None:
    intervals = parse_intervals(spec)
    assert run(events, intervals, 1000, checkpoint_every=every) == run(events, intervals, 1000)


def test_state_written_before_gap_flags_restores() -> None:
    """A processor upgraded in place reads the open bars its predecessor checkpointed (11 fields, no last
    closed bar): they restore unflagged, and a marker flags them as usual."""
    core = PartitionBars(parse_intervals("1m"), 0)
    core.restore({"max_seen": BASE, "intervals": ["1m"], "grace_ms": 0})
    start = bar_start(BASE, 60_000)
    old_bar = [100.0, 101.0, 99.0, 100.5, BASE, BASE, 3, 10, 40, None, BASE]
    core.restore_token(7, [[[[start, *old_bar]], [30, (start + IST_OFFSET_MS) // DAY_MS]]])
    assert core.gap(GapSpan(start, start + 1, frozenset({7}))) == (1, 0)
    core.advance(start + 60_000)
    (bar,) = core.closed
    assert (bar.gap, bar.revision, bar.ticks, bar.volume) == (True, 0, 3, 10)


def test_a_marker_reaches_only_the_last_closed_bar_and_counts_the_rest() -> None:
    core = PartitionBars(parse_intervals("1m"), 0)
    for minute in range(3):  # three closed bars of token 7 (the third closed by token 8's tick)
        core.add(7, BASE + minute * 60_000, 100.0, None, None)
    core.add(8, BASE + 3 * 60_000, 100.0, None, None)
    first, _, last = core.closed
    core.closed.clear()
    assert core.gap(GapSpan(first.start, first.start + 1, frozenset({7}))) == (0, 1)  # out of reach
    assert core.gap(GapSpan(last.start, last.start + 1, frozenset({7, 9}))) == (1, 0)
    assert core.closed == [last._replace(gap=True, revision=1)]
    assert core.gap(GapSpan(last.start, last.start + 1, frozenset({7}))) == (0, 0)  # once
    assert len(core.closed) == 1


def test_bars_align_to_the_ist_day() -> None:
    t = MIDNIGHT + 9 * 3_600_000 + 15 * 60_000 + 42_000  # 09:15:42 IST
    assert bar_start(t, 60_000) == t - 42_000
    assert bar_start(t, 3_600_000) == MIDNIGHT + 9 * 3_600_000  # 09:00 IST, not 08:30 / 09:30
    assert bar_start(t, DAY_MS) == MIDNIGHT  # 18:30 UTC the day before


def test_volume_is_the_rise_of_the_cumulative_counter_and_a_new_day_restarts_it() -> None:
    core = PartitionBars(parse_intervals("1m"), 0)
    start = MIDNIGHT - 120_000  # 23:58 IST
    for t, volume in [
        (0, 1000),
        (10_000, 1200),
        (60_000, 1250),
        (70_000, 1400),
        (120_000, 30),
        (130_000, 80),
    ]:
        core.add(7, start + t, 10.0, volume, None)
    core.add(7, start + 200_000, 10.0, 90, None)
    assert [c.volume for c in core.closed] == [200, 200, 80]  # first bar: from its first tick; then 30+50


def test_a_late_tick_is_reported_not_added() -> None:
    core = PartitionBars(parse_intervals("1m"), 1000)
    core.add(1, BASE + 5_000, 10.0, None, None)
    core.add(1, BASE + 61_000, 11.0, None, None)  # watermark 60 s: the first bar closes
    assert [c.close for c in core.closed] == [10.0]
    assert core.add(1, BASE + 59_000, 12.0, None, None) == ("1m",)
    assert core.add(1, BASE + 60_500, 12.0, None, None) == ()  # the open bar still takes it


def test_idle_closes_only_bars_whose_end_passed_on_the_wall_clock() -> None:
    core = PartitionBars(parse_intervals("1m,1d"), 2000)
    core.add(1, BASE + 1_000, 10.0, 5, None)
    core.advance(BASE + 61_000)  # watermark 59 s: nothing ends before it
    assert core.closed == []
    core.advance(BASE + 62_000)
    assert [(c.interval, c.closed_by) for c in core.closed] == [("1m", "idle")]
    assert core.open_bars() == 1  # the day bar


@pytest.mark.parametrize(
    ("text", "labels"), [("1m", ["1m"]), ("60m,5m, 1d,15m", ["5m", "15m", "1h", "1d"]), ("90s", ["90s"])]
)
def test_intervals_parse(text: str, labels: list[str]) -> None:
    assert [i.label for i in parse_intervals(text)] == labels


@pytest.mark.parametrize("text", ["", "7m", "2d", "1w", "m", "0m"])
def test_intervals_that_do_not_divide_a_day_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="CANDLES_INTERVALS"):
        parse_intervals(text)


def test_the_live_view_shows_the_latest_bar_of_each_instrument_and_interval() -> None:
    from datetime import UTC, datetime

    from connector.consume import LiveView

    view = LiveView(clock=lambda: 0.0)
    for start, close in [(MIDNIGHT, 101.0), (MIDNIGHT + 60_000, 102.5)]:
        bar = Candle(256265, "1m", start, start + 60_000, 100.0, 103.0, 99.0, close, 1200, 17, None,
                     start, start + 59_000, "watermark")._asdict()  # fmt: skip
        for key in ("start", "end", "first_tick_at", "last_tick_at"):
            bar[key] = datetime.fromtimestamp(bar[key] / 1000, UTC)
        view.add("Candle", bar)
    screen = view.render()
    assert "256265   1m " in screen and " 00:01:00 " in screen
    assert "102.50" in screen and "101.00" not in screen
    assert "Candle: 2" in screen


@settings(max_examples=500, deadline=None)
@given(tick=serde_ticks, received=st.integers(0, 2**42))
def test_the_tick_decoder_reads_what_the_full_reader_reads(tick: KiteTick, received: int) -> None:
    for data in (build_serializers().tick(tick, received), _confluent.tick(tick, received)):
        want = facts_of(AvroReader(registry_client=_registry).read(data)[1])
        got = TickDecoder(AvroReader(registry_client=_registry)).decode(data)
        assert got == want


def test_the_tick_decoder_takes_the_general_path_for_what_it_does_not_know() -> None:
    decoder = TickDecoder(AvroReader())
    depth_no_time = KiteTick(256265 * 256 + 1, Mode.FULL, True, 10.0, depth=tuple(range(30)))
    assert decoder.decode(build_serializers().tick(depth_no_time, 1234)).time_ms == 1234
    assert decoder.slow == 1
    with pytest.raises(SerializationError, match="not a Tick"):
        decoder.decode(build_serializers().dead_letter(DeadLetter(b"x", "e", "ws-binary"), 1))
    with pytest.raises(SerializationError, match="magic"):
        decoder.decode(b"garbage")


# The processor's own reporting and error handling, sans I/O.


def _kafka(code: int, reason: str, **flags: bool) -> KafkaException:
    """What librdkafka raises: a KafkaException carrying a KafkaError with the real code and flags."""
    return KafkaException(KafkaError(code, reason, **flags))


class _Script:
    """A transactional call that raises the given errors in turn, then returns "done"."""

    def __init__(self, *errors: KafkaException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def _calls(budget: float = 60.0) -> tuple[TransactionCalls, Status, _Clock]:
    status, clock = Status(), _Clock()
    return TransactionCalls(budget, status, sleep=clock.sleep, clock=clock), status, clock


TIMED_OUT = (KafkaError._TIMED_OUT, "Timed out waiting for operation to finish, retry call to resume")


def test_a_retriable_error_is_retried_with_backoff_and_counted_by_call() -> None:
    txn, status, clock = _calls()
    seen: list[str | None] = []
    call = _Script(
        _kafka(KafkaError.CONCURRENT_TRANSACTIONS, "Failed to initialize Producer ID", retriable=True),
        *(_kafka(*TIMED_OUT, retriable=True) for _ in range(6)),
    )

    def watched() -> str:
        seen.append(status.retrying)
        return call()

    assert txn("init_transactions", watched) == "done"
    assert call.calls == 8
    assert clock.slept == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert status.counts.retries == {"init_transactions": 7}
    assert seen[1] is not None and "CONCURRENT_TRANSACTIONS" in seen[1]
    assert status.retrying is None, "cleared once the call succeeds"


def test_an_abortable_error_asks_for_an_abort_without_retrying() -> None:
    txn, status, _ = _calls()
    call = _Script(_kafka(KafkaError.MSG_SIZE_TOO_LARGE, "Message size too large", txn_requires_abort=True))
    with pytest.raises(AbortRequired, match="commit_transaction: MSG_SIZE_TOO_LARGE"):
        txn("commit_transaction", call)
    assert call.calls == 1 and not status.counts.retries


def test_a_retried_call_that_ends_in_an_abort_leaves_no_retry_behind() -> None:
    # a commit timed out through a broker pause, then the broker had aborted the transaction: once that
    # is known the health verdict must not go on saying "retrying" while later transactions commit
    txn, status, _ = _calls()
    call = _Script(
        _kafka(*TIMED_OUT, retriable=True),
        _kafka(KafkaError.INVALID_TXN_STATE, "aborted by the broker", txn_requires_abort=True),
    )
    with pytest.raises(AbortRequired):
        txn("commit_transaction", call)
    assert status.retrying is None and status.counts.retries == {"commit_transaction": 1}


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (_kafka(KafkaError._FENCED, "fenced by a newer instance", fatal=True), "fatal Kafka error _FENCED"),
        (_kafka(KafkaError._STATE, "Operation not valid in state Ready"), "Kafka error _STATE"),
        (KafkaException("no KafkaError inside"), "Kafka error no KafkaError inside"),
    ],
)
def test_a_fatal_or_unknown_error_ends_the_processor_in_one_line(error: KafkaException, shown: str) -> None:
    txn, _, _ = _calls()
    with pytest.raises(ProcessorFailed, match=f"abort_transaction: {shown}") as failed:
        txn("abort_transaction", _Script(error))
    assert "\n" not in str(failed.value)
    inner = error.args[0]  # kept: a refusal (a missing TransactionalId ACL) is named from it
    assert failed.value.error is (inner if isinstance(inner, KafkaError) else None)


def test_retries_end_after_the_budget() -> None:
    txn, status, clock = _calls(budget=5.0)
    call = _Script(*(_kafka(*TIMED_OUT, retriable=True) for _ in range(100)))
    with pytest.raises(
        ProcessorFailed, match=r"commit_transaction kept failing for 5 s \(_TIMED_OUT"
    ) as failed:
        txn("commit_transaction", call)
    assert "CANDLES_TRANSACTION_RETRY_SECONDS" in str(failed.value)
    assert sum(clock.slept) == pytest.approx(5.0)
    assert status.verdict(clock(), 60)[1].startswith("transactions failing: commit_transaction retried for")


def test_blindness_needs_a_whole_window_of_undecodable_records() -> None:
    watch = BlindWatch(seconds=30, min_records=100)
    for i in range(99):
        watch.undecodable(float(i), "schema id 1 needs a registry: set SCHEMA_REGISTRY_URL")
    assert not watch.blind(1000.0), "fewer records than the minimum"
    watch.undecodable(99.0, "schema id 1 needs a registry: set SCHEMA_REGISTRY_URL")
    assert watch.blind(30.0) and not watch.blind(29.9)
    assert watch.reason(30.0).startswith("blind: none of the last 100 ticks read (over 30 s) decoded")
    watch.decoded()
    assert not watch.blind(1000.0), "one good tick ends it"
    never = BlindWatch(seconds=0, min_records=1)
    never.undecodable(0.0, "x")
    assert not never.blind(1e9)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (Status(running=True), (True, "ok")),
        (Status(), (False, "not running")),
        (Status(running=True, blind="blind: ..."), (False, "blind: ...")),
        (Status(running=True, retrying="commit_transaction retried for 3 s"),
         (False, "transactions failing: commit_transaction retried for 3 s")),
        (Status(running=True, aborted="commit_transaction: MSG_SIZE_TOO_LARGE"),
         (False, "transactions failing: commit_transaction: MSG_SIZE_TOO_LARGE")),
        (Status(running=True, unassigned_since=1000.0), (True, "ok")),
        (Status(running=True, unassigned_since=900.0),
         (False, "no partition of the ticks topic assigned for 100 s")),
    ],
)  # fmt: skip
def test_healthz_says_why(status: Status, verdict: tuple[bool, str]) -> None:
    assert status.verdict(1000.0, 60) == verdict


def test_metrics_export_the_planned_names() -> None:
    from prometheus_client import generate_latest

    status = Status(running=True, lag_records=12, watermark_lag_seconds=1.5, blind="blind: x")
    status.counts.ticks = 5
    status.counts.add(Counts(bars=Counter({"1m": 3, "5m": 1}), late=2, dead_letters=1, amended=4))
    status.counts.retries["init_transactions"] += 1
    status.counts.gap_markers, status.counts.gap_late = 6, 1
    text = generate_latest(CandleMetrics(status).registry).decode()
    for line in [
        "candles_ticks_read_total 5.0",
        'candles_bars_written_total{interval="1m"} 3.0',
        'candles_bars_written_total{interval="5m"} 1.0',
        "candles_late_ticks_total 2.0",
        "candles_dead_letters_total 1.0",
        "candles_gap_markers_read_total 6.0",
        "candles_gap_markers_late_total 1.0",
        "candles_bars_amended_total 4.0",
        "candles_commits_total 0.0",
        "candles_aborts_total 0.0",
        'candles_transaction_retries_total{call="init_transactions"} 1.0',
        "candles_undecodable_window 1.0",
        "candles_consumer_lag_records 12.0",
        "candles_watermark_lag_seconds 1.5",
        'thread_up{thread="processor"} 1.0',
    ]:
        assert line in text.splitlines(), line
    assert CandleMetrics(status).healthy() == (False, "blind: x")


def _tick_bytes(framing: str) -> bytes:
    tick = KiteTick(256265, Mode.FULL, True, 100.0, exchange_timestamp_ms=BASE)
    return (_confluent if framing == "confluent" else build_serializers()).tick(tick, BASE)


def test_a_confluent_framed_ticks_topic_without_a_registry_is_refused_at_start() -> None:
    values = [_tick_bytes("single-object"), _tick_bytes("confluent")]
    with pytest.raises(ConfigError, match=r"Confluent wire format \(schema id \d+\) and SCHEMA_REGISTRY_URL"):
        check_sample("kite.ticks", values, TickDecoder(AvroReader()), None)
    reader = AvroReader(registry_client=_registry)
    assert check_sample("kite.ticks", values, TickDecoder(reader), "mock://candles-test") == []


def test_a_ticks_topic_where_nothing_decodes_is_refused_at_start() -> None:
    decoder = TickDecoder(AvroReader())
    with pytest.raises(ConfigError, match="none of the newest 2 records of t decodes as a tick"):
        check_sample("t", [b"not avro", b"\xc3\x01" + bytes(8)], decoder, None)
    assert check_sample("t", [], decoder, None) == [], "an empty topic is checked as it fills"
    errors = check_sample("t", [b"not avro", _tick_bytes("single-object")], decoder, None)
    assert len(errors) == 1 and "invalid magic byte" in errors[0]


def test_a_registry_that_does_not_answer_is_not_a_bad_record() -> None:
    class Unreachable:
        def get_schema(self, schema_id: int) -> Any:
            raise ConnectionRefusedError(111, "Connection refused")

    unknown = b"\x00" + (999).to_bytes(4, "big") + b"body"
    with pytest.raises(SerializationError, match="schema id 999 is not in the Schema Registry"):
        TickDecoder(AvroReader(registry_client=_registry)).decode(unknown)
    with pytest.raises(
        RegistryError, match=r"did not give schema id 999 \(ConnectionRefusedError: .*Connection refused"
    ):
        TickDecoder(AvroReader(registry_client=Unreachable())).decode(unknown)


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.cluster.yml"])
def test_every_compose_service_that_touches_the_topics_takes_the_framing_from_one_place(name: str) -> None:
    """The candle service once ran without the registry the connector wrote through (issue 20)."""
    text = (Path(__file__).resolve().parents[2] / name).read_text()
    for variable in ("KAFKA_FRAMING", "SCHEMA_REGISTRY_URL"):
        keys = re.findall(rf"^ +{variable}:", text, re.MULTILINE)
        assert len(keys) == 1, f"{name}: {variable} is set once, in x-registry-env"
    services = re.split(r"\n  (\S+):\n", text.split("\nservices:\n", 1)[1])
    blocks = dict(zip(services[1::2], services[2::2], strict=True))
    for service in ("connector", "candles", "consumer"):
        assert "<<: *registry-env" in blocks[service], f"{name}: {service} lacks <<: *registry-env"


class _Offsets:
    """What ``_gap_offsets`` asks the restorer: the end of each gaps partition, then the first offset at
    or after a time (every time asked is kept; -1: nothing since, as Kafka answers)."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def get_watermark_offsets(self, tp: Any, timeout: float) -> tuple[int, int]:
        return 0, 40 + tp.partition

    def offsets_for_times(self, tps: list[Any], timeout: float) -> list[Any]:
        from confluent_kafka import TopicPartition

        self.asked += [tp.offset for tp in tps]
        return [TopicPartition(tp.topic, tp.partition, 7 if tp.partition == 0 else -1) for tp in tps]


@pytest.mark.parametrize("from_beginning", [False, True])
def test_markers_are_read_again_from_before_the_oldest_watermark_of_the_partitions_with_state(
    from_beginning: bool,
) -> None:
    from connector.candles._processor import _GAP_SLACK_MS, CandleProcessor, _Partition
    from connector.config import CandlesSettings

    now = BASE + 3_600_000
    settings = CandlesSettings.load(
        environ={"CANDLES_INTERVALS": "1m,5m", "CANDLES_FROM_BEGINNING": str(from_beginning).lower()}
    )
    processor = CandleProcessor(settings, clock=lambda: now / 1000)
    processor.gap_partitions, processor.restorer = 2, _Offsets()  # type: ignore[assignment]
    old = PartitionBars(processor.intervals, 2000)
    old.restore({"max_seen": BASE, "intervals": ["1m", "5m"], "grace_ms": 2000})
    processor.parts = {0: _Partition(old, 10, 0.0)}
    slack = 2000 + 300_000 + _GAP_SLACK_MS
    assert [tp.offset for tp in processor._gap_offsets()] == [7, 41]  # none since then: from the end
    processor.parts[1] = _Partition(PartitionBars(processor.intervals, 2000), None, 0.0)  # no state yet
    offsets = [tp.offset for tp in processor._gap_offsets()]
    if from_beginning:  # the new partition's ticks may be of any age
        assert offsets == [OFFSET_BEGINNING, OFFSET_BEGINNING]
    else:  # the old partition still needs the markers since its watermark, not only recent ones
        assert offsets == [7, 41]
        assert processor.restorer.asked == [BASE - slack] * 4  # type: ignore[attr-defined]
