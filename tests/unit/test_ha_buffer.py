"""The HA buffer: a standby's window, the takeover's dedup, an active's transactions over the buffer."""

from __future__ import annotations

from connector.ha import REPLAYED, Entry, RecordBuffer
from connector.ha._buffer import ENTRY_OVERHEAD


def _entry(n: int, at: float = 0.0, ident: bool = True, size: int = 10) -> Entry:
    key = str(n).encode()
    value = b"v" * size
    return Entry("ticks", key, value, 1000 + n, None, ("ticks", key, b"%d" % n) if ident else None, at)


def _keys(entries: list[Entry]) -> list[int]:
    return [int(e.key) for e in entries]


def test_a_standby_forgets_what_is_older_than_its_window() -> None:
    buffer = RecordBuffer(window_seconds=30, max_bytes=1 << 30)
    for n in range(100):
        buffer.append(_entry(n, at=float(n)))
    assert buffer.expire(now=100.0) == 70  # appended before 70.0: older than 30 s
    assert len(buffer) == 30 and buffer.expired == 70
    assert buffer.oldest_timestamp_ms() == 1070


def test_a_standby_keeps_to_its_byte_bound_dropping_the_oldest() -> None:
    per = len(b"7") + 10 + ENTRY_OVERHEAD
    buffer = RecordBuffer(window_seconds=1e9, max_bytes=5 * per)
    for n in range(9):
        buffer.append(_entry(n))
    buffer.expire(now=0)
    assert len(buffer) == 5 and buffer.bytes == 5 * per
    assert _keys(buffer.take(100)) == [4, 5, 6, 7, 8]


def test_takeover_keeps_what_kafka_lacks_and_flags_all_of_it() -> None:
    buffer = RecordBuffer(30, 1 << 30)
    for n in range(6):
        buffer.append(_entry(n, ident=n != 5))  # 5 is never checked (e.g. an order update)
    present = {("ticks", b"1", b"1"), ("ticks", b"3", b"3"), ("ticks", b"9", b"9")}
    assert buffer.keep_missing(present, REPLAYED) == 4
    replay = buffer.take(100)
    assert _keys(replay) == [0, 2, 4, 5]
    assert all(e.headers == [REPLAYED] for e in replay)
    assert buffer.oldest_timestamp_ms() == 1000


def test_a_commit_takes_exactly_what_was_produced_and_an_abort_gives_it_back() -> None:
    buffer = RecordBuffer(30, 1 << 30)
    for n in range(10):
        buffer.append(_entry(n))
    first = buffer.take(4)
    buffer.unsend(1)  # the fourth could not be produced
    assert _keys(first[:3]) == [0, 1, 2] and buffer.waiting() == 7
    assert buffer.rewind() == 3  # aborted: produced again, from the same place
    assert _keys(buffer.take(5)) == [0, 1, 2, 3, 4]
    assert _keys(buffer.commit()) == [0, 1, 2, 3, 4]
    assert len(buffer) == 5 and buffer.waiting() == 5 and buffer.rewind() == 0
    buffer.append(_entry(10))
    assert _keys(buffer.take(100)) == [5, 6, 7, 8, 9, 10]
    assert _keys(buffer.commit()) == [5, 6, 7, 8, 9, 10]
    assert len(buffer) == 0 and buffer.bytes == 0


def test_indices_survive_compaction_over_a_long_run() -> None:
    buffer = RecordBuffer(30, 1 << 30)
    produced: list[int] = []
    for round_ in range(30):
        for n in range(round_ * 1000, (round_ + 1) * 1000):
            buffer.append(_entry(n))
        taken = buffer.take(700)
        produced += _keys(buffer.commit()) if round_ % 3 else []
        if not round_ % 3:
            buffer.rewind()
        del taken
    produced += _keys(buffer.take(10**6))
    assert produced == list(range(30_000))


def test_records_kafka_refuses_for_good_leave_the_waiting_ones() -> None:
    buffer = RecordBuffer(30, 1 << 30)
    for n in range(6):
        buffer.append(_entry(n))
    buffer.take(2)
    dropped = buffer.drop_waiting(lambda e: int(e.key) in (1, 3, 4))
    assert _keys(dropped) == [3, 4], "what is in the open transaction stays"
    assert _keys(buffer.take(10)) == [2, 5] and len(buffer) == 4
