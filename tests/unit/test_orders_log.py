"""The order-update write-ahead log: durability across SIGKILL, torn tails, compaction, locking, a model."""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from connector.errors import OrderLogError
from connector.orders import (
    ORIGIN_HEADER,
    ORIGIN_RECONCILIATION,
    RECORD_ID_HEADER,
    OrderLog,
    OrderRecord,
    record_id,
)

ROOT = Path(__file__).resolve().parents[2]


def entry(n: int) -> OrderRecord:
    """A distinct entry per ``n`` whose content can be checked from its record id alone."""
    return OrderRecord(f"k{n}".encode(), bytes([n % 251]) * (n % 300), 1_764_000_000_000 + n, f"id{n}")


def _child(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_record_id_and_headers() -> None:
    frame = b'{"type": "order", "data": {"order_id": "1"}}'
    assert record_id(frame) == hashlib.sha256(frame).hexdigest()[:32]
    assert record_id(frame) != record_id(frame + b" ")
    e = OrderRecord(b"k", b"v", 1, record_id(frame), ORIGIN_RECONCILIATION)
    assert e.headers() == [
        (RECORD_ID_HEADER, record_id(frame).encode()),
        (ORIGIN_HEADER, b"reconciliation"),
    ]
    with pytest.raises(ValueError, match="origin must be one of websocket, reconciliation"):
        OrderRecord(b"k", b"v", 1, "x", "rest")


def test_pending_survives_reopen_and_seqs_never_repeat(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "orders.log"
    with OrderLog(path) as log:
        seqs = log.append([entry(n) for n in range(5)])
        assert seqs == [1, 2, 3, 4, 5]
        log.done(2)
        log.done(4)
        log.done(99)  # unknown: ignored
    with OrderLog(path) as log:
        assert log.pending() == [(1, entry(0)), (3, entry(2)), (5, entry(4))]
        for seq, _ in log.pending():
            log.done(seq)
        assert log.append([entry(9)]) == [6]
    with OrderLog(path) as log:  # everything was acknowledged and compacted away, yet 7 comes next
        assert log.pending() == [(6, entry(9))]
        assert log.append([entry(10)]) == [7]
    assert path.stat().st_mode & 0o777 == 0o600


def test_an_empty_append_writes_nothing(tmp_path: Path) -> None:
    with OrderLog(tmp_path / "log") as log:
        assert log.append([]) == []
        assert len(log) == 0


def test_closed_log_refuses_work_with_a_clear_error(tmp_path: Path) -> None:
    log = OrderLog(tmp_path / "log")
    seq = log.append([entry(1)])[0]
    log.close()
    log.close()  # twice is fine
    with pytest.raises(OrderLogError, match="closed"):
        log.append([entry(2)])
    with pytest.raises(OrderLogError, match="close it after the Kafka producer"):
        log.done(seq)


def _frame(payload: bytes) -> bytes:
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(lambda f: f[:5], id="frame-header-cut"),
        pytest.param(lambda f: f[: len(f) // 2], id="payload-cut"),
        pytest.param(lambda f: f[:-1] + bytes([f[-1] ^ 1]), id="checksum-fails"),
        pytest.param(lambda f: b"\0" * 8, id="zero-length"),
    ],
)
def test_a_torn_tail_is_cut_with_a_warning_and_the_rest_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, tail: Callable[[bytes], bytes]
) -> None:
    path = tmp_path / "log"
    with OrderLog(path) as log:
        log.append([entry(1), entry(2)])
        log.done(1)
    whole = path.read_bytes()
    # A valid frame of a further entry, as append would have written it, torn by the "crash".
    other = tmp_path / "other"
    with OrderLog(other) as log:
        log.append([entry(3)])
    frame = other.read_bytes()[len(_frame(b"H" + bytes(8))) :]
    path.write_bytes(whole + tail(frame))
    with caplog.at_level(logging.WARNING, "connector.orders"), OrderLog(path) as log:
        assert log.pending() == [(2, entry(2))]
        assert path.stat().st_size == len(whole)  # cut back, so later frames are not stuck behind it
        assert log.append([entry(4)]) == [3]
    assert "torn by a crash" in caplog.text
    with OrderLog(path) as log:
        assert log.pending() == [(2, entry(2)), (3, entry(4))]


def test_an_unknown_record_kind_stops_the_open_and_keeps_the_file(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with OrderLog(path) as log:
        log.append([entry(1)])
    before = path.read_bytes() + _frame(b"Zfuture")
    path.write_bytes(before)
    with pytest.raises(OrderLogError, match=r"unknown record kind b'Z' .* newer connector version"):
        OrderLog(path)
    assert path.read_bytes() == before
    OrderLog(tmp_path / "log2").close()  # and the failed open released its lock
    with pytest.raises(OrderLogError):
        OrderLog(path)


def test_compaction_keeps_exactly_the_pending_entries(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with OrderLog(path, compact_bytes=1 << 30) as log:
        seqs = log.append([entry(n) for n in range(1000)])
        for seq in seqs:
            if seq % 3:
                log.done(seq)
        log.flush()
        big = path.stat().st_size
        log.compact()
        assert path.stat().st_size < big / 2
        expected = [(seq, entry(seq - 1)) for seq in seqs if seq % 3 == 0]
        assert log.pending() == expected
        assert log.append([entry(5000)]) == [1001]  # the log is usable after the rename
    with OrderLog(path) as log:
        assert log.pending() == [*expected, (1001, entry(5000))]
    assert sorted(os.listdir(tmp_path)) == ["log", "log.lock"]  # no temporary file left


def test_the_log_stays_small_while_entries_are_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "log"
    sizes = []
    with OrderLog(path, compact_bytes=16 << 10) as log:
        for n in range(1200):
            (seq,) = log.append([entry(n)])
            if n >= 10:  # ten stay unacknowledged throughout
                log.done(seq)
            sizes.append(path.stat().st_size)
        assert [seq for seq, _ in log.pending()] == list(range(1, 11))
    assert max(sizes) < (16 << 10) + 1000  # at most one append past the threshold
    assert path.stat().st_size < 4000


def test_a_compaction_that_fails_costs_no_entry(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "log"
    blocker = tmp_path / ".log.compact"
    blocker.mkdir()  # where the compacted file would be written: opening it fails
    with caplog.at_level(logging.WARNING, "connector.orders"), OrderLog(path, compact_bytes=4096) as log:
        for n in range(80):
            assert log.append([entry(n)]) == [n + 1]
        assert caplog.text.count("cannot compact the order log") == 1  # tried again only at twice the size
        blocker.rmdir()
        sizes = []
        for n in range(80, 200):
            log.append([entry(n)])
            log.done(n + 1)
            sizes.append(path.stat().st_size)
        assert any(b < a for a, b in itertools.pairwise(sizes))  # compacted once it could
    with OrderLog(path) as log:
        assert log.pending() == [(n + 1, entry(n)) for n in range(80)]


def test_a_second_opener_is_refused_in_this_process_and_another(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with (
        OrderLog(path),
        pytest.raises(OrderLogError, match=rf"in use by another process \(pid {os.getpid()}\)"),
    ):
        OrderLog(path)
    holder = _child(
        """
        import sys
        from connector.orders import OrderLog
        log = OrderLog(sys.argv[1])
        print("locked", flush=True)
        sys.stdin.read()
        """,
        str(path),
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(OrderLogError, match=rf"pid {holder.pid}\).*own ORDER_LOG_DIR"):
            OrderLog(path)
    finally:
        holder.kill()
        holder.wait(10)
    OrderLog(path).close()  # the lock went with the process


CRASHING_WRITER = """
import sys
from connector.orders import OrderRecord, OrderLog
from tests.unit.test_orders_log import entry

log = OrderLog(sys.argv[1], compact_bytes=32 << 10)
n = int(sys.argv[2])  # ids continue after those of earlier runs
while True:
    batch = [entry(n + i) for i in range(1 + n % 4)]
    seqs = log.append(batch)
    print("A", " ".join(f"{s}:{e.record_id}" for s, e in zip(seqs, batch)), flush=True)
    print("D", " ".join(map(str, seqs[::2])), flush=True)  # before: an ack may be written any time after
    for seq in seqs[::2]:
        log.done(seq)
    if n % 5 == 0:
        log.flush()
        print("F", flush=True)
    n += len(batch)
"""


def test_entries_survive_sigkill_in_the_middle_of_appending(tmp_path: Path) -> None:
    path = tmp_path / "orders.log"
    appended: dict[int, str] = {}  # seq → record id, for every append that returned
    acked: set[int] = set()  # done() was (or was about to be) called: may or may not come back
    flushed: set[int] = set()  # acknowledged and flushed: must not come back
    start = 0
    for run in range(4):
        writer = _child(CRASHING_WRITER, str(path), str(start))
        assert writer.stdout is not None
        deadline = time.monotonic() + 30
        output: list[str] = []
        try:
            # Each run is killed at a different point, wherever the writer happens to be.
            while len(output) < 300 + 137 * run and time.monotonic() < deadline:
                line = writer.stdout.readline()
                if not line:
                    break
                output.append(line)
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(10)
        output += writer.stdout.readlines()  # what it printed before it died counts too
        for line in output:
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "A":
                for item in rest.split():
                    number, rid = item.split(":")
                    appended[int(number)] = rid
            elif kind == "D":
                acked.update(map(int, rest.split()))
            elif kind == "F":
                flushed.update(acked)
        assert writer.returncode == -signal.SIGKILL, writer.stderr.read() if writer.stderr else ""
        with OrderLog(path) as log:
            pending = dict(log.pending())
            for seq, e in pending.items():  # nothing half-written: every entry is whole
                n = int(e.record_id.removeprefix("id"))
                assert e == entry(n)
                assert appended.get(seq, e.record_id) == e.record_id
            missing = set(appended) - set(pending) - acked - flushed
            assert not missing, f"run {run}: appended, never acknowledged, gone: {sorted(missing)[:10]}"
            assert not flushed & set(pending), "acknowledged and flushed, yet replayed"
            for replayed in list(pending):  # replay: produced again, then acknowledged
                log.done(replayed)
            flushed |= set(pending)
            start = max([int(r.removeprefix("id")) for r in appended.values()], default=0) + 1000
    assert len(appended) > 1000


FULL_DISK_WRITER = """
import resource, signal, sys
from connector.errors import OrderLogError
from tests.unit.test_orders_log import entry
from connector.orders import OrderLog

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversize write fails with EFBIG instead
log = OrderLog(sys.argv[1], compact_bytes=1 << 30)
log.append([entry(0)])
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))
ok = 1
try:
    for n in range(1, 1000):
        log.append([entry(n), entry(n + 1000)])  # some of this batch fits, the rest does not
        ok += 2
except OrderLogError as exc:
    print("refused", n, exc, flush=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
log.append([entry(5000)])
print("appended", ok + 1, flush=True)
"""


def test_a_write_that_fails_leaves_nothing_behind_and_the_log_usable(tmp_path: Path) -> None:
    path = tmp_path / "log"
    writer = _child(FULL_DISK_WRITER, str(path))
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    refused, appended = out.splitlines()
    assert "File too large; free disk space in" in refused
    n = int(refused.split()[1])
    with OrderLog(path) as log:
        ids = [e.record_id for _, e in log.pending()]
    expected = ["id0", *(f"id{m}" for k in range(1, n) for m in (k, k + 1000)), "id5000"]
    assert ids == expected
    assert len(ids) == int(appended.split()[1])


class LogModel(RuleBasedStateMachine):
    """Random appends, acks, flushes, compactions, reopens and torn tails against a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "log"
        self.log = OrderLog(self.path, compact_bytes=2048)
        self.model: dict[int, OrderRecord] = {}
        self.last_seq = 0
        self.n = 0

    @rule(count=st.integers(1, 6))
    def append(self, count: int) -> None:
        batch = [entry(self.n + i) for i in range(count)]
        self.n += count
        seqs = self.log.append(batch)
        assert seqs == list(range(self.last_seq + 1, self.last_seq + 1 + count))
        self.last_seq = seqs[-1]
        self.model.update(zip(seqs, batch, strict=True))

    @rule(data=st.data())
    def done(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.model)) if self.model else st.integers(0, 5))
        self.log.done(seq)
        self.model.pop(seq, None)

    @rule()
    def flush(self) -> None:
        self.log.flush()

    @rule()
    def compact(self) -> None:
        self.log.compact()

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.log = OrderLog(self.path, compact_bytes=2048)

    @rule(garbage=st.binary(min_size=1, max_size=40))
    def torn_tail_reopen(self, garbage: bytes) -> None:
        self.log.close()
        with self.path.open("ab") as fh:
            fh.write(garbage)
        self.log = OrderLog(self.path, compact_bytes=2048)

    @invariant()
    def matches_the_model(self) -> None:
        assert self.log.pending() == sorted(self.model.items())
        assert len(self.log) == len(self.model)

    def teardown(self) -> None:
        self.log.close()
        self.dir.cleanup()


TestLogModel = LogModel.TestCase
TestLogModel.settings = settings(max_examples=30, stateful_step_count=20, deadline=None)
