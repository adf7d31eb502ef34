"""Real services for tests and benchmarks: a single-node KRaft Kafka and a Schema Registry in containers.

Import this module before anything imports testcontainers: it sets the variables testcontainers reads at
import time so that, on machines where ``/.dockerenv`` exists or the default route is not local, the
container is reached on 127.0.0.1. Ports are published on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from confluent_kafka import Consumer

os.environ.setdefault("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")

DEFAULT_KAFKA_IMAGE = "apache/kafka:4.1.1"
LOCAL_KAFKA_IMAGE = "kite-kafka/kafka:4.1.1"  # docker/build-local-images.sh, where no registry answers
DEFAULT_REGISTRY_IMAGE = "apicurio/apicurio-registry-mem:2.4.2.Final"
LOCAL_REGISTRY_IMAGE = "kite-kafka/apicurio-registry:2.4.2"
REGISTRY_API = "/apis/ccompat/v7"  # Apicurio's Confluent-compatible API
DEFAULT_PROMETHEUS_IMAGE = "prom/prometheus:v2.42.0"  # Debian bookworm's version, which promtool tests
LOCAL_PROMETHEUS_IMAGE = "kite-kafka/prometheus:2.42.0"
DEFAULT_ALERTMANAGER_IMAGE = "prom/alertmanager:v0.25.0"
LOCAL_ALERTMANAGER_IMAGE = "kite-kafka/alertmanager:0.25.0"
RYUK_IMAGE = os.environ.get("RYUK_CONTAINER_IMAGE", "testcontainers/ryuk:0.8.1")


def _disable_ryuk_without_image() -> None:
    """Ryuk needs its own image; where it cannot be pulled, containers are removed by the fixture."""
    if "TESTCONTAINERS_RYUK_DISABLED" in os.environ:
        return
    from docker.client import DockerClient

    import docker  # testcontainers' own dependency

    try:
        DockerClient.from_env().images.get(RYUK_IMAGE)
    except docker.errors.ImageNotFound:
        os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"
    except docker.errors.DockerException:
        pass


def pick_image(variable: str, official: str, local: str) -> str:
    """The image named by ``variable``; else ``official`` if present or pullable; else the locally built
    ``local`` (docker/build-local-images.sh), saying so."""
    chosen = os.environ.get(variable)
    if chosen:
        return chosen
    from docker.client import DockerClient

    import docker

    client = DockerClient.from_env(timeout=300)
    try:
        client.images.get(official)
        return official
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.pull(official)
        return official
    except docker.errors.DockerException as exc:
        pull_error = str(exc).splitlines()[0][:200]
    try:
        client.images.get(local)
    except docker.errors.ImageNotFound:
        raise RuntimeError(
            f"{official} cannot be pulled ({pull_error}) and {local} is not built: "
            f"run docker/build-local-images.sh, or set {variable}"
        ) from None
    print(f"\n[harness] {official} cannot be pulled: using the locally built {local} ({variable} overrides)")
    return local


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def kafka_environment(advertised: str) -> dict[str, str]:
    """The apache/kafka image convention: each KAFKA_* variable becomes a server property."""
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        # Clients dial PLAINTEXT; the broker reaches itself on INTERNAL (transaction markers need that:
        # the published address is not reachable from inside the container).
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,INTERNAL://:19092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{advertised},INTERNAL://localhost:19092",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "INTERNAL",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        # Transactions of killed processes are aborted within a second of their timeout, not ten.
        "KAFKA_TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS": "1000",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_LOG_DIRS": "/tmp/kraft-combined-logs",
        "CLUSTER_ID": "4L6g3nShT-eMCtK--X86sw",
    }


def earliest_consumer(bootstrap: str, topic: str, group_prefix: str) -> Consumer:
    """A consumer of ``topic`` from its first record, in a group of its own, committing nothing."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{group_prefix}-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    return consumer


def wait_for_broker(bootstrap: str, timeout: float = 120.0) -> None:
    """Until the broker answers a metadata request and can create a topic (the controller is up)."""
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    # While the broker boots, docker's proxy accepts and drops connections: expected here, so not logged.
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3, "log.connection.close": False})
    deadline = time.monotonic() + timeout
    probe = f"_ready-{uuid.uuid4().hex[:8]}"
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=2)
            admin.create_topics([NewTopic(probe, 1, 1)])[probe].result(timeout=5)
            admin.delete_topics([probe])[probe].result(timeout=5)
            return
        except Exception as exc:  # not up yet: any client error means try again
            last = exc
            time.sleep(0.5)
    raise TimeoutError(f"Kafka at {bootstrap} not ready after {timeout:.0f} s: {last}")


@contextlib.contextmanager
def kafka_broker() -> Iterator[tuple[str, str | None]]:
    """Yields (bootstrap servers, container id or None when KAFKA_BOOTSTRAP_SERVERS names a broker)."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        wait_for_broker(external)
        yield external, None
        return
    _disable_ryuk_without_image()
    from testcontainers.core.container import DockerContainer

    image = pick_image("KITE_KAFKA_IMAGE", DEFAULT_KAFKA_IMAGE, LOCAL_KAFKA_IMAGE)
    port = free_port()  # the advertised port must be the one the client dials, so it is chosen first
    bootstrap = f"127.0.0.1:{port}"
    container = DockerContainer(image).with_envs(**kafka_environment(bootstrap))
    # Loopback only: with_bind_ports binds every interface; docker-py takes a (host ip, port) tuple.
    container.ports["9092/tcp"] = ("127.0.0.1", port)  # type: ignore[assignment]
    container.with_kwargs(labels={"org.kite-kafka.test": "kafka"})
    started = time.monotonic()
    container.start()
    try:
        wait_for_broker(bootstrap)
        print(f"\n[harness] Kafka {image} up at {bootstrap} in {time.monotonic() - started:.1f} s")
        yield bootstrap, container.get_wrapped_container().id
    finally:
        container.stop()


def wait_for_registry(url: str, timeout: float = 120.0) -> None:
    """Until the registry lists its subjects (the Confluent API answers)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/subjects", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError as exc:  # not up yet (refused, reset by docker's proxy, 503 while starting)
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"Schema Registry at {url} not ready after {timeout:.0f} s: {last}")


@contextlib.contextmanager
def schema_registry() -> Iterator[tuple[str, str | None]]:
    """Yields (Confluent-compatible registry URL, container id or None when KITE_TEST_REGISTRY_URL names
    a running registry). The container is Apicurio Registry (in-memory), published on 127.0.0.1 only."""
    external = os.environ.get("KITE_TEST_REGISTRY_URL")
    if external:
        wait_for_registry(external)
        yield external, None
        return
    _disable_ryuk_without_image()
    from testcontainers.core.container import DockerContainer

    image = pick_image("KITE_REGISTRY_IMAGE", DEFAULT_REGISTRY_IMAGE, LOCAL_REGISTRY_IMAGE)
    port = free_port()
    url = f"http://127.0.0.1:{port}{REGISTRY_API}"
    container = DockerContainer(image)
    container.ports["8080/tcp"] = ("127.0.0.1", port)  # type: ignore[assignment]
    container.with_kwargs(labels={"org.kite-kafka.test": "schema-registry"})
    started = time.monotonic()
    container.start()
    try:
        wait_for_registry(url)
        print(f"\n[harness] Schema Registry {image} up at {url} in {time.monotonic() - started:.1f} s")
        yield url, container.get_wrapped_container().id
    finally:
        container.stop()
