"""Chaos: real faults (SIGKILL, SIGTERM, broker pause/kill/bounce, network cut) under 5,000 ticks/s.

Every scenario counts the simulator's sent log against what Kafka holds and what the connector said
it acknowledged: no acknowledged tick missing, no tick duplicated, no order update missing; ticks lost
only where counted (conflated, or unacknowledged at a SIGKILL or at exit). A hot-standby set of two
processes (``tests/chaos/ha.py``) loses nothing its standby received when its active is killed, stopped,
frozen or cut off from a paused broker, and writes no unflagged duplicate. ``bench/chaos.py`` prints the
same scenarios as tables.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chaos import scenarios
from tests.chaos.brokers import Broker, Cluster, kafka_cluster, single_broker
from tests.chaos.ha import HA, HaTally, ha_faults
from tests.chaos.rig import Tally

pytestmark = pytest.mark.chaos


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with single_broker() as b:
        yield b


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with kafka_cluster(3) as c:
        yield c


def _check(tally: Tally | HaTally) -> None:
    print(f"\n{tally.row()}  {'; '.join(tally.notes)}")
    assert tally.problems() == [], tally.row()


# The groups run in this order on one broker: the broker SIGKILL comes last.
@pytest.fixture(scope="module")
def connector_faults(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tally]:
    return scenarios.connector_faults(broker, tmp_path_factory.mktemp("connector-faults"))


@pytest.fixture(scope="module")
def two_lines(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tally]:
    return scenarios.two_lines(broker, tmp_path_factory.mktemp("two-lines"))


@pytest.fixture(scope="module")
def broker_paused(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tally]:
    return scenarios.broker_paused(broker, tmp_path_factory.mktemp("broker-paused"))


@pytest.fixture(scope="module")
def ha(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> dict[str, HaTally]:
    return ha_faults(broker, tmp_path_factory.mktemp("ha"))


@pytest.fixture(scope="module")
def broker_killed(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tally]:
    return scenarios.broker_killed(broker, tmp_path_factory.mktemp("broker-killed"))


@pytest.fixture(scope="module")
def cluster_faults(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tally]:
    return scenarios.cluster_faults(cluster, tmp_path_factory.mktemp("cluster"))


@pytest.mark.parametrize("scenario", scenarios.CONNECTOR)
def test_connector_faults(connector_faults: dict[str, Tally], scenario: str) -> None:
    _check(connector_faults[scenario])


@pytest.mark.parametrize("scenario", scenarios.LINES)
def test_two_lines(two_lines: dict[str, Tally], scenario: str) -> None:
    tally = two_lines[scenario]
    _check(tally)
    assert tally.lost == 0, "a tick is lost only if both lines miss it, and they never were down together"


@pytest.mark.parametrize("scenario", scenarios.PAUSED)
def test_broker_paused(broker_paused: dict[str, Tally], scenario: str) -> None:
    _check(broker_paused[scenario])


@pytest.mark.parametrize("scenario", HA)
def test_hot_standby(ha: dict[str, HaTally], scenario: str) -> None:
    _check(ha[scenario])


@pytest.mark.parametrize("scenario", scenarios.BROKER_KILL)
def test_broker_killed(broker_killed: dict[str, Tally], scenario: str) -> None:
    _check(broker_killed[scenario])


@pytest.mark.parametrize("scenario", scenarios.CLUSTER)
def test_cluster_faults(cluster_faults: dict[str, Tally], scenario: str) -> None:
    _check(cluster_faults[scenario])


def test_conflate_loses_exactly_what_it_counts(broker_paused: dict[str, Tally]) -> None:
    tally = broker_paused[scenarios.PAUSED[1]]
    assert tally.lost_ticks == tally.lost_allowed > 0, tally.row()
