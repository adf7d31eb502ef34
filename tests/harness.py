"""Real services for tests and benchmarks: a single-node KRaft Kafka and a Schema Registry in containers.

Import this module before anything imports testcontainers: it sets the variables testcontainers reads at
import time so that, on machines where ``/.dockerenv`` exists or the default route is not local, the
container is reached on 127.0.0.1. Ports are published on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import socket
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
        # An HA set takes over within about a second (HA_SESSION_TIMEOUT_MS=1000): classic groups may
        # then ask for session timeouts below the default floor of 6 s.
        "KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS": "500",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_LOG_DIRS": "/tmp/kraft-combined-logs",
        "CLUSTER_ID": "4L6g3nShT-eMCtK--X86sw",
    }


def client_properties(bootstrap: str) -> dict[str, Any]:
    """librdkafka properties of a helper client (tests, benchmarks) of ``bootstrap``. For the external
    broker KAFKA_BOOTSTRAP_SERVERS names, the connector's own KAFKA_* settings (TLS, SASL,
    KAFKA_CONFIG_FILE) as its commands read them, so that a benchmark runs against a secured cluster too."""
    if bootstrap != os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return {"bootstrap.servers": bootstrap}
    from connector.config import KafkaClient

    return KafkaClient.load().client_config()


def earliest_consumer(bootstrap: str, topic: str, group_prefix: str) -> Consumer:
    """A consumer of ``topic`` from its first record, in a group of its own, committing nothing."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            **client_properties(bootstrap),
            "group.id": f"{group_prefix}-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    return consumer


def wait_for_broker(bootstrap: str, timeout: float = 120.0, client: dict[str, Any] | None = None) -> None:
    """Until the broker answers a metadata request and can create a topic (the controller is up);
    ``client`` adds librdkafka properties (a secured listener's)."""
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    # While the broker boots, docker's proxy accepts and drops connections: expected here, so not logged.
    admin = AdminClient(
        {"bootstrap.servers": bootstrap, "log_level": 3, "log.connection.close": False, **(client or {})}
    )
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
        wait_for_broker(external, client=client_properties(external))
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


# -- a secured broker --------------------------------------------------------------------------------------
SCRAM_USERS = ("admin", "connector", "candles", "consumer")
MTLS_CLIENT = "mtls-client"  # the client certificate's CN, which is its principal (User:mtls-client)


@dataclass(frozen=True)
class SecureBroker:
    """A broker whose clients must authenticate: SASL_SSL with SCRAM-SHA-512 users on ``sasl``, mutual TLS
    on ``mtls``. ``certs`` holds its CA (``ca.crt``), the mutual-TLS client's certificate and key
    (``mtls-client.crt``/``.key``) and a CA that signed nothing of the broker's (``other/ca.crt``)."""

    sasl: str
    mtls: str
    certs: Path
    passwords: dict[str, str]
    container_id: str

    def scram(self, user: str) -> dict[str, Any]:
        """librdkafka properties of ``user`` on the SASL_SSL listener."""
        return {
            "bootstrap.servers": self.sasl,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": self.passwords[user],
            "ssl.ca.location": str(self.certs / "ca.crt"),
        }

    def mutual_tls(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.mtls,
            "security.protocol": "SSL",
            "ssl.ca.location": str(self.certs / "ca.crt"),
            "ssl.certificate.location": str(self.certs / f"{MTLS_CLIENT}.crt"),
            "ssl.key.location": str(self.certs / f"{MTLS_CLIENT}.key"),
        }


def secure_kafka_environment(sasl: str, mtls: str) -> dict[str, str]:
    """The plain broker's environment with its client listeners secured and the StandardAuthorizer on.

    Certificates are made in the container by the image's kite-certs.sh (SAN IP:127.0.0.1 only, so that
    dialling "localhost" fails host name verification); the broker reaches itself over PLAINTEXT on
    loopback, as User:ANONYMOUS, a super user like the admin.
    """
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return {
        **kafka_environment(sasl),
        "KAFKA_LISTENERS": "SASL://:9092,MTLS://:9093,INTERNAL://127.0.0.1:19092,CONTROLLER://127.0.0.1:9094",
        "KAFKA_ADVERTISED_LISTENERS": f"SASL://{sasl},MTLS://{mtls},INTERNAL://localhost:19092",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": (
            "SASL:SASL_SSL,MTLS:SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"
        ),
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9094",
        "KAFKA_SASL_ENABLED_MECHANISMS": "SCRAM-SHA-512",
        "KAFKA_LISTENER_NAME_SASL_SCRAM___SHA___512_SASL_JAAS_CONFIG": scram,
        "KAFKA_SSL_KEYSTORE_TYPE": "PEM",
        "KAFKA_SSL_KEYSTORE_LOCATION": "/tmp/certs/kafka.pem",
        "KAFKA_SSL_TRUSTSTORE_TYPE": "PEM",
        "KAFKA_SSL_TRUSTSTORE_LOCATION": "/tmp/certs/ca.crt",
        "KAFKA_LISTENER_NAME_MTLS_SSL_CLIENT_AUTH": "required",
        "KAFKA_SSL_PRINCIPAL_MAPPING_RULES": "RULE:^CN=([A-Za-z0-9._-]+)$/$1/,DEFAULT",
        "KAFKA_AUTHORIZER_CLASS_NAME": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND": "false",
        "KAFKA_SUPER_USERS": "User:admin;User:ANONYMOUS",
        "KAFKA_HEAP_OPTS": "-Xmx512m -Xms512m",
    }


_SECURE_START = """set -e
certs=/opt/kafka/bin/kite-certs.sh
$certs /tmp/certs kafka IP:127.0.0.1 >/dev/null
$certs /tmp/certs mtls-client >/dev/null
$certs /tmp/certs/other stranger >/dev/null
mkdir -p /tmp/pw
SCRAM_USERS=""
for user in admin connector candles consumer; do
  v="PASSWORD_$user"; printf %s "${!v}" > "/tmp/pw/$user"; SCRAM_USERS="$SCRAM_USERS $user:/tmp/pw/$user"
done
export SCRAM_USERS
exec /opt/kafka/entrypoint.sh
"""


def _copy_out(container: object, source: str, target: Path, last: str, timeout: float = 60.0) -> None:
    """``source`` (a directory in the container) into ``target``, once its file ``last`` exists."""
    import docker

    deadline = time.monotonic() + timeout
    while True:
        try:
            container.get_archive(f"{source}/{last}")  # type: ignore[attr-defined]
            stream, _ = container.get_archive(source)  # type: ignore[attr-defined]
            break
        except docker.errors.NotFound:
            container.reload()  # type: ignore[attr-defined]
            if time.monotonic() > deadline or container.status == "exited":  # type: ignore[attr-defined]
                logs = container.logs().decode(errors="replace")[-2000:]  # type: ignore[attr-defined]
                raise RuntimeError(f"{source} never appeared in the container; its log:\n{logs}") from None
            time.sleep(0.2)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        tar.extractall(target, filter="data")


@contextlib.contextmanager
def secure_kafka_broker(workdir: Path) -> Iterator[SecureBroker]:
    """A broker as :class:`SecureBroker` describes, from the local Kafka image; certificates copied into
    ``workdir``. Waits until the admin can create a topic."""
    _disable_ryuk_without_image()
    from testcontainers.core.container import DockerContainer

    # SCRAM_USERS and kite-certs.sh are the project's image's: the official one has neither
    chosen = os.environ.get("KITE_KAFKA_IMAGE")
    image = chosen if chosen and chosen != DEFAULT_KAFKA_IMAGE else LOCAL_KAFKA_IMAGE
    sasl, mtls = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    passwords = {user: secrets.token_hex(12) for user in SCRAM_USERS}
    env = {**secure_kafka_environment(sasl, mtls), **{f"PASSWORD_{u}": p for u, p in passwords.items()}}
    container = DockerContainer(image).with_envs(**env).with_command(["-c", _SECURE_START])
    container.with_kwargs(entrypoint=["bash"], labels={"org.kite-kafka.test": "secure-kafka"})
    container.ports["9092/tcp"] = ("127.0.0.1", int(sasl.rsplit(":", 1)[1]))  # type: ignore[assignment]
    container.ports["9093/tcp"] = ("127.0.0.1", int(mtls.rsplit(":", 1)[1]))  # type: ignore[assignment]
    started = time.monotonic()
    container.start()
    try:
        wrapped = container.get_wrapped_container()
        _copy_out(wrapped, "/tmp/certs", workdir, last="other/stranger.pem")
        broker = SecureBroker(sasl, mtls, workdir / "certs", passwords, wrapped.id)
        wait_for_broker(sasl, client=broker.scram("admin"))
        print(f"\n[harness] secured Kafka {image} up at {sasl} (SASL_SSL) and {mtls} (mutual TLS) in "
              f"{time.monotonic() - started:.1f} s")  # fmt: skip
        yield broker
    finally:
        container.stop()
