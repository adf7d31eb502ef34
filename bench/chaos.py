"""The chaos scenarios as a table: one row per scenario, counted record by record.

    python bench/chaos.py [--groups connector,lines,paused,broker-kill,cluster]

Each scenario streams 5,000 ticks/s and about 5 order updates/s from the simulator (its own process)
through the connector (its own process) into Kafka (containers from KITE_KAFKA_IMAGE), injects its fault,
then compares the simulator's sent log with the topics read back. Columns: records sent (ticks and
order updates), acknowledged by Kafka as the connector reported it, in Kafka, sent but not in Kafka,
duplicated in Kafka, seconds from the end of the fault until the connector was connected and
acknowledging with little in flight. Same code as ``pytest -m chaos``; it prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.chaos import scenarios
from tests.chaos.brokers import kafka_cluster, single_broker
from tests.chaos.rig import HEADER, Tally

GROUPS = ("connector", "lines", "paused", "broker-kill", "cluster")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--groups", default=",".join(GROUPS), help="comma-separated, of " + ", ".join(GROUPS))
    groups = [g for g in parser.parse_args().groups.split(",") if g]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups {sorted(unknown)}")
    rows: list[Tally] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kite-chaos-") as tmp:
        work = Path(tmp)
        single = [g for g in groups if g != "cluster"]
        if single:
            with single_broker() as broker:
                for group in single:
                    t0 = time.monotonic()
                    if group == "connector":
                        got = scenarios.connector_faults(broker, work)
                    elif group == "lines":
                        got = scenarios.two_lines(broker, work)
                    elif group == "paused":
                        got = scenarios.broker_paused(broker, work)
                    else:
                        got = scenarios.broker_killed(broker, work)
                    rows += got.values()
                    print(f"[{group}: {time.monotonic() - t0:.0f} s]", file=sys.stderr)
        if "cluster" in groups:
            t0 = time.monotonic()
            with kafka_cluster(3) as cluster:
                rows += scenarios.cluster_faults(cluster, work).values()
            print(f"[cluster: {time.monotonic() - t0:.0f} s]", file=sys.stderr)
    print(HEADER)
    for row in rows:
        print(row.row())
    for row in rows:
        for note in row.notes:
            print(f"- {row.scenario}: {note}")
    print(f"total: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
