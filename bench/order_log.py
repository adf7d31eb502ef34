"""Appends per second to the order-update log, each append flushed to disk, acked as Kafka would.

Run: python bench/order_log.py [entries] [directory]. The directory (default: a temporary one under the
current directory, so on the disk the connector's ORDER_LOG_DIR would use, not a tmpfs) decides what is
measured: fdatasync costs what the disk says. Prints one line per batch size (entries per append call):
1 is an update arriving alone, larger sizes are updates that arrive together and share one flush.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connector.orders import OrderLog, OrderRecord, record_id

VALUE = bytes(420)  # about the size of an Avro order update


def run(directory: Path, entries: int, batch: int) -> float:
    """Appends ``entries`` in calls of ``batch``, acknowledging each batch after the next; entries/s."""
    items = [
        OrderRecord(b"779521", VALUE, 1_764_000_000_000 + n, record_id(n.to_bytes(8))) for n in range(entries)
    ]
    with OrderLog(directory / f"bench-{batch}.log") as log:
        previous: list[int] = []
        t0 = time.perf_counter()
        for i in range(0, entries, batch):
            seqs = log.append(items[i : i + batch])
            for seq in previous:
                log.done(seq)
            previous = seqs
        elapsed = time.perf_counter() - t0
    return entries / elapsed


def main() -> None:
    entries = int(sys.argv[1]) if len(sys.argv) > 1 else 5_000
    parent = Path(sys.argv[2]) if len(sys.argv) > 2 else Path.cwd()
    with tempfile.TemporaryDirectory(dir=parent, prefix=".bench-order-log-") as tmp:
        print(f"{entries} entries of {len(VALUE)} bytes in {tmp}")
        for batch in (1, 8, 64):
            print(f"batch {batch:3}: {run(Path(tmp), entries, batch):12,.0f} appends/s (each append fsynced)")


if __name__ == "__main__":
    main()
