"""Kafka brokers the chaos suite may kill, pause, bounce and cut off: plain ``docker`` commands.

One broker (as the tests' harness runs it) or a 3-broker KRaft cluster on a user-defined network, each
broker's client port published on 127.0.0.1 and advertised as such, plus an internal listener for
replication. Built from ``KITE_KAFKA_IMAGE`` (the apache/kafka ``KAFKA_*`` convention).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from tests.harness import DEFAULT_KAFKA_IMAGE, free_port, kafka_environment, wait_for_broker

LABEL = "org.kite-kafka.test=chaos"


def docker(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


@dataclass
class Broker:
    node_id: int
    container: str
    port: int  # published on 127.0.0.1 and advertised as 127.0.0.1:port
    alias: str = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        docker("kill", "--signal", "KILL", self.container)

    def start(self) -> None:
        docker("start", self.container)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM; the broker hands over leadership first)."""
        docker("stop", "--time", "60", self.container, timeout=90)

    def pause(self) -> None:
        docker("pause", self.container)

    def unpause(self) -> None:
        docker("unpause", self.container)


@dataclass
class Cluster:
    brokers: list[Broker]
    network: str = ""

    @property
    def bootstrap(self) -> str:
        return ",".join(b.address for b in self.brokers)

    def by_id(self, node_id: int) -> Broker:
        return next(b for b in self.brokers if b.node_id == node_id)

    def disconnect(self, broker: Broker) -> None:
        """Cut the broker off the network: neither its peers nor clients reach it."""
        docker("network", "disconnect", self.network, broker.container)

    def connect(self, broker: Broker) -> None:
        docker("network", "connect", "--alias", broker.alias, self.network, broker.container)

    def leader(self, topic: str, partition: int = 0) -> Broker:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 3})
        meta = admin.list_topics(topic, timeout=10)
        return self.by_id(meta.topics[topic].partitions[partition].leader)

    def wait_fully_replicated(self, topics: list[str], timeout: float = 90) -> float:
        """Until every partition of ``topics`` has all its replicas in sync; returns the seconds taken."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 3})
        started = time.monotonic()
        lagging: list[str] = []
        while time.monotonic() - started < timeout:
            try:
                meta = admin.list_topics(timeout=5)
                lagging = [
                    f"{t}/{p.id}"
                    for t in topics
                    for p in meta.topics[t].partitions.values()
                    if len(p.isrs) < len(p.replicas) or p.leader < 0
                ]
                if not lagging:
                    return time.monotonic() - started
            except Exception as exc:  # the metadata request itself may fail while brokers move
                lagging = [str(exc)]
            time.sleep(0.5)
        raise AssertionError(f"partitions not fully replicated after {timeout:.0f} s: {lagging}")


def _image() -> str:
    return os.environ.get("KITE_KAFKA_IMAGE", DEFAULT_KAFKA_IMAGE)


def _run(name: str, port: int, env: dict[str, str], *extra: str) -> str:
    envs = [arg for k, v in env.items() for arg in ("-e", f"{k}={v}")]
    return docker(
        "run", "-d", "--name", name, "--label", LABEL, "-p", f"127.0.0.1:{port}:9092", *extra, *envs, _image()
    )


@contextlib.contextmanager
def single_broker() -> Iterator[Broker]:
    """A single KRaft broker, as the integration tests run it, in a container the test owns."""
    port = free_port()
    name = f"kite-chaos-{uuid.uuid4().hex[:8]}"
    env = {**kafka_environment(f"127.0.0.1:{port}"), "KAFKA_HEAP_OPTS": "-Xmx512m -Xms512m"}
    broker = Broker(1, _run(name, port, env), port)
    try:
        wait_for_broker(broker.address)
        yield broker
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", broker.container], capture_output=True, timeout=60)


def cluster_environment(node_id: int, alias: str, port: int, voters: str) -> dict[str, str]:
    """One broker of a 3-node KRaft cluster: RF 3, min ISR 2, no unclean leader election."""
    return {
        "CLUSTER_ID": "kite-chaos-cluster-001",
        "KAFKA_NODE_ID": str(node_id),
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "INTERNAL://:19092,HOST://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"INTERNAL://{alias}:19092,HOST://127.0.0.1:{port}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "INTERNAL:PLAINTEXT,HOST:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "INTERNAL",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": voters,
        "KAFKA_DEFAULT_REPLICATION_FACTOR": "3",
        "KAFKA_MIN_INSYNC_REPLICAS": "2",
        "KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE": "false",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "3",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "3",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "2",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "3",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "2",
        # A cut-off follower leaves the ISR after 10 s instead of 30 s, so the suite's faults stay short.
        "KAFKA_REPLICA_LAG_TIME_MAX_MS": "10000",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        # An HA set takes over within about a second (HA_SESSION_TIMEOUT_MS=1000): classic groups may
        # then ask for session timeouts below the default floor of 6 s.
        "KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS": "500",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_LOG_DIRS": "/var/lib/kafka/data",
        "KAFKA_HEAP_OPTS": "-Xmx512m -Xms512m",
    }


def _wait_registered(cluster: Cluster, size: int, timeout: float = 60) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap, "log_level": 3})
    deadline = time.monotonic() + timeout
    while len(admin.list_topics(timeout=5).brokers) < size:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {size} brokers registered after {timeout:.0f} s")
        time.sleep(0.5)


@contextlib.contextmanager
def kafka_cluster(size: int = 3) -> Iterator[Cluster]:
    suffix = uuid.uuid4().hex[:8]
    network = f"kite-chaos-{suffix}"
    docker("network", "create", "--label", LABEL, network)
    ports = [free_port() for _ in range(size)]
    aliases = [f"kafka-{i}" for i in range(1, size + 1)]
    voters = ",".join(f"{i}@{alias}:9093" for i, alias in enumerate(aliases, 1))
    cluster = Cluster([], network)
    try:
        for i, (alias, port) in enumerate(zip(aliases, ports, strict=True), 1):
            name = f"kite-chaos-{suffix}-{alias}"
            env = cluster_environment(i, alias, port, voters)
            container = _run(name, port, env, "--network", network, "--network-alias", alias)
            cluster.brokers.append(Broker(i, container, port, alias))
        wait_for_broker(cluster.bootstrap, timeout=180)
        _wait_registered(cluster, size)
        yield cluster
    finally:
        for b in cluster.brokers:
            subprocess.run(["docker", "rm", "-f", "-v", b.container], capture_output=True, timeout=60)
        subprocess.run(["docker", "network", "rm", network], capture_output=True, timeout=60)
