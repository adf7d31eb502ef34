"""The chaos scenarios as a table: one row per scenario, counted record by record.

    python bench/chaos.py [--groups connector,lines,paused,ha,broker-kill,cluster]

Each scenario streams 5,000 ticks/s and about 5 order updates/s from the simulator (its own process)
through the connector (its own process) into Kafka (containers from KITE_KAFKA_IMAGE), injects its fault,
then compares the simulator's sent log with the topics read back. Columns: records sent (ticks and
order updates), acknowledged by Kafka as the connector reported it, in Kafka, sent but not in Kafka,
duplicated in Kafka, seconds from the end of the fault until the connector was connected and
acknowledging with little in flight. Same code as ``pytest -m chaos``; it prints, it asserts nothing.

The ``ha`` group (a hot-standby set of two connector processes, 2,000 ticks/s) has its own table: what
the standby's connection received, missing of that, duplicates (flagged ones in brackets) and the
takeover's seconds from the fault to the standby producing.
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
from tests.chaos.ha import HA_HEADER, HaTally, ha_faults
from tests.chaos.rig import HEADER, Tally

GROUPS = ("connector", "lines", "paused", "ha", "broker-kill", "cluster")  # the broker SIGKILL comes last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--groups", default=",".join(GROUPS), help="comma-separated, of " + ", ".join(GROUPS))
    groups = [g for g in parser.parse_args().groups.split(",") if g]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups {sorted(unknown)}")
    rows: list[Tally] = []
    ha_rows: list[HaTally] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kite-chaos-") as tmp:
        work = Path(tmp)
        single = [g for g in groups if g != "cluster"]
        if single:
            with single_broker() as broker:
                for group in single:
                    t0 = time.monotonic()
                    if group == "ha":
                        ha_rows += ha_faults(broker, work).values()
                    elif group == "connector":
                        rows += scenarios.connector_faults(broker, work).values()
                    elif group == "lines":
                        rows += scenarios.two_lines(broker, work).values()
                    elif group == "paused":
                        rows += scenarios.broker_paused(broker, work).values()
                    else:
                        rows += scenarios.broker_killed(broker, work).values()
                    print(f"[{group}: {time.monotonic() - t0:.0f} s]", file=sys.stderr)
        if "cluster" in groups:
            t0 = time.monotonic()
            with kafka_cluster(3) as cluster:
                rows += scenarios.cluster_faults(cluster, work).values()
            print(f"[cluster: {time.monotonic() - t0:.0f} s]", file=sys.stderr)
    if rows:
        print(HEADER)
        for row in rows:
            print(row.row())
        for row in rows:
            for note in row.notes:
                print(f"- {row.scenario}: {note}")
    if ha_rows:
        print(HA_HEADER)
        for ha in ha_rows:
            print(ha.row())
        for ha in ha_rows:
            for note in ha.notes:
                print(f"- {ha.scenario}: {note}")
    print(f"total: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
