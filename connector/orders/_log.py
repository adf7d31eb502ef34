"""A write-ahead log of order updates: durable before they are produced, produced again until Kafka acks them.

Use: ``seqs = log.append(entries)`` before producing (one write and one ``fdatasync`` per call, so updates
that arrive together share one disk flush), ``log.done(seq)`` in the delivery callback, and at start
``log.pending()`` gives what an earlier run left unacknowledged, in append order, to be produced again and
marked done by its own ack; nothing leaves the log before its ack.

File format: a flat sequence of frames ``length u32 | crc32 u32 | payload`` (little-endian, the CRC over
the payload). Binary rather than JSON lines because values are Avro bytes (base64 would add a third and a
conversion per record), and a length with a checksum says exactly where a record torn by a crash ends.
The payload's first byte names its kind:

- ``A`` an entry: seq u64, timestamp_ms i64, lengths of key and value (u32), of record_id and origin
  (u16), then those four byte strings;
- ``D`` acknowledgements: the seqs (u64 each) of entries Kafka acknowledged;
- ``H`` header: the next seq (u64), first frame of a compacted file so seqs never repeat.

Acks are buffered and written lazily, with no flush of their own (they ride along with the next append's
write, or go out every 256 acks, on :meth:`OrderLog.flush` and at close): losing one only means its entry
is produced once more at the next start, a duplicate consumers drop by its ``kite.record_id`` header; it
never loses an update.

A crash in the middle of a write leaves a torn frame at the end: its checksum fails on the next open, the
frame and what follows are dropped with a warning and the file is cut back (that append never returned,
so nothing the caller relied on is lost). A frame whose checksum holds but whose kind is unknown stops the
open with :class:`OrderLogError` rather than being cut off. The log is rewritten with only its pending
entries (temporary file, fsync, rename, fsync of the directory) once it reaches ``compact_bytes`` and at
twice its size after the last compaction, so it stays small, and at close. An exclusive ``flock`` on a
``.lock`` file beside it keeps two processes from sharing one log.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import json
import logging
import os
import struct
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from connector.errors import OrderLogError
from connector.orders._identity import OrderRecord, record_id

__all__ = ["ORDER_LOG_FILE", "OrderLog", "open_order_log"]

log = logging.getLogger("connector.orders")

ORDER_LOG_FILE = "order_updates.wal"
_LEGACY_SPOOL = "order_updates.jsonl"  # written at clean stops by versions before the order log
_FRAME = struct.Struct("<II")  # payload length, crc32 of the payload
_ENTRY = struct.Struct("<cQqIIHH")  # kind, seq, timestamp_ms, then the four lengths
_HEAD = struct.Struct("<cQ")  # kind, next seq
_ENTRY_KIND, _ACK_KIND, _HEAD_KIND = b"A", b"D", b"H"
_ACK_BATCH = 256


def _entry_frame(seq: int, entry: OrderRecord) -> bytes:
    rid, origin = entry.record_id.encode(), entry.origin.encode()
    try:
        head = _ENTRY.pack(
            _ENTRY_KIND, seq, entry.timestamp_ms, len(entry.key), len(entry.value), len(rid), len(origin)
        )
    except struct.error as exc:  # before any write: the log is untouched
        raise ValueError(f"entry does not fit the order log ({exc}): {entry.record_id!r}") from exc
    return _frame(b"".join((head, entry.key, entry.value, rid, origin)))


def _frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _ack_frame(seqs: list[int]) -> bytes:
    return _frame(_ACK_KIND + struct.pack(f"<{len(seqs)}Q", *seqs))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class OrderLog:
    """The write-ahead log at ``path`` (parent directories are created); one process at a time.

    Safe to call from several threads. Raises :class:`OrderLogError` if another process holds the log or
    it cannot be read or written; an append that raised wrote nothing (the file is cut back to where it
    was), so the caller knows those entries are not durable.
    """

    def __init__(self, path: str | os.PathLike[str], compact_bytes: int = 4 << 20) -> None:
        self.path = Path(path)
        self._compact_bytes = compact_bytes
        self._mutex = threading.Lock()
        self._pending: dict[int, OrderRecord] = {}  # seq → entry, in append order
        self._acks: list[int] = []  # acknowledged seqs not written yet
        self._next_seq = 1
        self._broken: str | None = None
        self._closed = False
        self._lock_fd = self._lock()
        try:
            self._fd, self._size = self._open()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._compact_at = max(compact_bytes, 2 * self._size)

    # -- opening -------------------------------------------------------------------------------------------
    def _lock(self) -> int:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise OrderLogError(f"cannot create the order log in {self.path.parent}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OrderLogError(f"cannot lock {lock_path}: {exc.strerror}") from exc
            raise OrderLogError(
                f"the order log {self.path} is in use by another process (pid {holder}): stop that "
                "connector, or give this one its own ORDER_LOG_DIR"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # names the holder in the error above
        except OSError as exc:
            os.close(fd)
            raise OrderLogError(f"cannot write {lock_path}: {exc.strerror}") from exc
        return fd

    def _open(self) -> tuple[int, int]:
        created = not self.path.exists()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise OrderLogError(f"cannot open the order log {self.path}: {exc.strerror}") from exc
        try:
            if created:
                _fsync_dir(self.path.parent)
            data = os.pread(fd, os.fstat(fd).st_size, 0)
            end = self._load(data)
            if end < len(data):
                log.warning(
                    "order log %s: dropped %d bytes after byte %d, a record torn by a crash while it was "
                    "written (its append never returned)",
                    self.path,
                    len(data) - end,
                    end,
                )
                os.ftruncate(fd, end)
                os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            raise OrderLogError(f"cannot read the order log {self.path}: {exc.strerror}") from exc
        except BaseException:
            os.close(fd)
            raise
        return fd, end

    def _load(self, data: bytes) -> int:
        """Replays the frames into memory; returns where the last whole frame ends."""
        view, pos, size = memoryview(data), 0, len(data)
        while pos + _FRAME.size <= size:
            length, crc = _FRAME.unpack_from(data, pos)
            start = pos + _FRAME.size
            end = start + length
            if length == 0 or end > size or zlib.crc32(view[start:end]) != crc:
                break  # torn
            kind = data[start : start + 1]
            if kind == _ENTRY_KIND:
                _, seq, ts, klen, vlen, rlen, olen = _ENTRY.unpack_from(data, start)
                at = start + _ENTRY.size
                if at + klen + vlen + rlen + olen != end:
                    raise OrderLogError(
                        f"order log {self.path}: entry at byte {pos} has inconsistent lengths"
                    )
                key, value = data[at : at + klen], data[at + klen : at + klen + vlen]
                at += klen + vlen
                try:
                    rid, origin = data[at : at + rlen].decode(), data[at + rlen : end].decode()
                    self._pending[seq] = OrderRecord(key, value, ts, rid, origin)
                except ValueError as exc:  # checksum fine, content not ours: do not cut it off
                    raise OrderLogError(f"order log {self.path}: bad entry at byte {pos}: {exc}") from exc
                self._next_seq = max(self._next_seq, seq + 1)
            elif kind == _ACK_KIND:
                for (seq,) in struct.iter_unpack("<Q", view[start + 1 : end]):
                    self._pending.pop(seq, None)
            elif kind == _HEAD_KIND:
                self._next_seq = max(self._next_seq, _HEAD.unpack_from(data, start)[1])
            else:
                raise OrderLogError(
                    f"order log {self.path}: unknown record kind {kind!r} at byte {pos}; was it written by "
                    "a newer connector version?"
                )
            pos = end
        return pos

    # -- the log -------------------------------------------------------------------------------------------
    def append(self, entries: Sequence[OrderRecord]) -> list[int]:
        """Makes ``entries`` durable (one write, one fdatasync) and returns their seqs, in order."""
        if not entries:
            return []
        with self._mutex:
            self._usable()
            first = self._next_seq
            frames = [_entry_frame(first + i, entry) for i, entry in enumerate(entries)]
            acks = self._acks
            if acks:  # pending acks ride along: they cost no extra write
                frames.insert(0, _ack_frame(acks))
            self._write(b"".join(frames), sync=True)
            acks.clear()
            seqs = list(range(first, first + len(entries)))
            self._pending.update(zip(seqs, entries, strict=True))
            self._next_seq = first + len(entries)
            if self._size >= self._compact_at:
                try:
                    self._compact()
                except (
                    OrderLogError
                ) as exc:  # the entries are durable all the same; try again at twice the size
                    log.warning("%s", exc)
                    self._compact_at = 2 * self._size
            return seqs

    def done(self, seq: int) -> None:
        """Kafka acknowledged entry ``seq``: it will not be produced again (recorded lazily, see above)."""
        with self._mutex:
            if self._closed:
                raise OrderLogError(f"order log {self.path} is closed: close it after the Kafka producer")
            if self._pending.pop(seq, None) is None:
                return  # acknowledged before, or a seq this log never gave out
            self._acks.append(seq)
            if len(self._acks) >= _ACK_BATCH and self._broken is None:
                try:
                    self._write_acks(sync=False)
                except OrderLogError as exc:  # kept buffered; at worst their entries are produced twice
                    log.warning("%s", exc)

    def flush(self) -> None:
        """Writes the buffered acks and flushes the file to disk."""
        with self._mutex:
            self._usable()
            self._write_acks(sync=True)

    def pending(self) -> list[tuple[int, OrderRecord]]:
        """(seq, entry) of every entry not acknowledged yet, in append order."""
        with self._mutex:
            return list(self._pending.items())

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def size_bytes(self) -> int:
        return self._size

    def disk_free_bytes(self) -> int:
        """Free bytes on the log's file system (for the operator's alert before appends start failing)."""
        st = os.statvfs(self.path.parent)
        return st.f_bavail * st.f_frsize

    def compact(self) -> None:
        """Rewrites the file with only the pending entries, atomically."""
        with self._mutex:
            self._usable()
            self._compact()

    def close(self) -> None:
        """Compacts (so a clean stop leaves only what is unacknowledged), then releases the file and lock."""
        with self._mutex:
            if self._closed:
                return
            try:
                if self._broken is None:
                    self._compact()
            except OrderLogError as exc:
                log.error("%s; entries acknowledged since the last write may be produced again", exc)
            finally:
                self._closed = True
                os.close(self._fd)
                os.close(self._lock_fd)  # releases the flock

    def __enter__(self) -> OrderLog:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------------------
    def _usable(self) -> None:
        if self._closed:
            raise OrderLogError(f"order log {self.path} is closed")
        if self._broken is not None:
            raise OrderLogError(self._broken)

    def _write_acks(self, sync: bool) -> None:
        if self._acks:
            self._write(_ack_frame(self._acks), sync)
            self._acks.clear()
        elif sync:
            self._sync()

    def _sync(self) -> None:
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            raise OrderLogError(f"cannot flush the order log {self.path}: {exc.strerror}") from exc

    def _write(self, data: bytes, sync: bool) -> None:
        """Appends ``data`` whole or not at all: on failure the file is cut back to where it was."""
        try:
            _write_all(self._fd, data)
            if sync:
                os.fdatasync(self._fd)
        except OSError as exc:
            reason = f"cannot write the order log {self.path}: {exc.strerror}"
            try:
                os.ftruncate(self._fd, self._size)
            except OSError as cut:
                # A partial frame stays at the end: later frames would sit behind it, unreadable.
                self._broken = f"{reason}, nor cut it back ({cut.strerror}); restart the connector"
                raise OrderLogError(self._broken) from exc
            raise OrderLogError(f"{reason}; free disk space in {self.path.parent}") from exc
        self._size += len(data)

    def _compact(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.compact")
        data = b"".join(
            [
                _frame(_HEAD.pack(_HEAD_KIND, self._next_seq)),
                *(_entry_frame(seq, entry) for seq, entry in self._pending.items()),
            ]
        )
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):  # the error below says what went wrong
                tmp.unlink(missing_ok=True)
            raise OrderLogError(f"cannot compact the order log {self.path}: {exc.strerror}") from exc
        # From here the new file is the log: the old descriptor points at the replaced one.
        try:
            _fsync_dir(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except OSError as exc:
            self._broken = f"cannot reopen the order log {self.path} after compacting: {exc.strerror}"
            raise OrderLogError(self._broken) from exc
        os.close(self._fd)
        self._fd, self._size = fd, len(data)
        self._acks.clear()  # their entries are not in the new file
        self._compact_at = max(self._compact_bytes, 2 * self._size)


def open_order_log(directory: Path) -> OrderLog:
    """The order log in ``directory``, with what a version before the log spooled at its stop moved in."""
    order_log = OrderLog(directory / ORDER_LOG_FILE)
    legacy = directory / _LEGACY_SPOOL
    if legacy.exists():
        records = []
        for line in legacy.read_text().splitlines():
            item = json.loads(line)
            value = base64.b64decode(item["value"])
            records.append(OrderRecord(item["key"].encode(), value, item["ts"], record_id(value)))
        order_log.append(records)
        legacy.unlink()
        log.info("moved %d order updates spooled by an older version from %s into the order log",
                 len(records), legacy)  # fmt: skip
    return order_log
