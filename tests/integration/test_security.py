"""Against a real secured broker (SASL_SSL with SCRAM-SHA-512 users, mutual TLS, StandardAuthorizer with
no access unless an ACL grants it), shared by every test of this module.

Each test has topics and groups of its own and grants the ACLs the README lists for each command, on
those names. The commands run as the real CLI in a subprocess wherever an exit status, a time or the
captured output is what is tested.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._acl import AclBinding, AclBindingFilter, AclOperation, AclPermissionType
from confluent_kafka.admin._resource import ResourcePatternType, ResourceType
from confluent_kafka.cimpl import NewTopic

from connector.serde import AvroReader
from connector.simulator import SimulatorConfig, bundled_instruments, running_simulator
from tests.harness import MTLS_CLIENT, SecureBroker, free_port, secure_kafka_broker
from tests.integration.helpers import (
    connector_env,
    connector_settings,
    http_get,
    running_connector,
    wait_until,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INSTRUMENTS = bundled_instruments()
TOKENS = ",".join(str(i.instrument_token) for i in INSTRUMENTS[:5])
READ, WRITE, CREATE = AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE
LITERAL, PREFIXED = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    with secure_kafka_broker(tmp_path_factory.mktemp("secure-kafka")) as broker:
        yield broker


@dataclass(frozen=True)
class Names:
    """One test's topics and groups, named as a deployment would name them, with a suffix of its own."""

    suffix: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "suffix", self.suffix or uuid.uuid4().hex[:8])

    def topic(self, name: str) -> str:
        return f"{name}-{self.suffix}"

    @property
    def connector_topics(self) -> list[str]:
        return [self.topic(t) for t in ("kite.ticks", "kite.order_updates", "kite.dead_letters", "kite.gaps")]

    @property
    def candles_prefix(self) -> str:
        return f"kite.candles-{self.suffix}."

    def run_env(self) -> dict[str, str]:
        ticks, orders, letters, gaps = self.connector_topics
        return {
            "KAFKA_TOPIC_TICKS": ticks,
            "KAFKA_TOPIC_ORDER_UPDATES": orders,
            "KAFKA_TOPIC_DEAD_LETTERS": letters,
            "KAFKA_TOPIC_GAPS": gaps,
        }

    def candles_env(self) -> dict[str, str]:
        prefix = self.candles_prefix
        return {
            "KAFKA_TOPIC_TICKS": self.topic("kite.ticks"),
            "KAFKA_TOPIC_GAPS": self.topic("kite.gaps"),
            "KAFKA_TOPIC_DEAD_LETTERS": self.topic("kite.dead_letters"),
            "CANDLES_TOPIC_PREFIX": prefix,
            "CANDLES_LATE_TOPIC": f"{prefix}late",
            "CANDLES_STATE_TOPIC": f"{prefix}state",
            "CANDLES_GROUP": f"kite-candles-{self.suffix}",
        }


def _acl(
    principal: str,
    resource: ResourceType,
    name: str,
    op: AclOperation,
    pattern: ResourcePatternType = LITERAL,
) -> AclBinding:
    return AclBinding(resource, name, pattern, f"User:{principal}", "*", op, AclPermissionType.ALLOW)


def _admin(broker: SecureBroker) -> AdminClient:
    return AdminClient(broker.scram("admin"))  # keep it referenced until its futures are done


def grant(broker: SecureBroker, bindings: list[AclBinding]) -> None:
    admin = _admin(broker)
    for future in admin.create_acls(bindings).values():
        future.result(timeout=30)


def least_privilege(n: Names, connector: str = "connector") -> list[AclBinding]:
    """The ACLs of README's table, for ``n``'s names: what each command needs, nothing more."""
    ticks, orders, letters, gaps = n.connector_topics
    candles = n.candles_env()
    bindings = [
        _acl(connector, ResourceType.TOPIC, t, op) for t in n.connector_topics for op in (WRITE, CREATE)
    ]
    bindings += [
        _acl("candles", ResourceType.TOPIC, ticks, READ),
        _acl("candles", ResourceType.TOPIC, gaps, READ),
        *[_acl("candles", ResourceType.TOPIC, letters, op) for op in (WRITE, CREATE)],
        *[
            _acl("candles", ResourceType.TOPIC, n.candles_prefix, op, PREFIXED)
            for op in (READ, WRITE, CREATE)
        ],
        _acl("candles", ResourceType.GROUP, candles["CANDLES_GROUP"], READ, PREFIXED),
        _acl("candles", ResourceType.TRANSACTIONAL_ID, candles["CANDLES_GROUP"], WRITE, PREFIXED),
        _acl("consumer", ResourceType.TOPIC, ticks, READ),
        _acl("consumer", ResourceType.TOPIC, orders, READ),
        _acl("consumer", ResourceType.GROUP, f"kite-consume-{n.suffix}", READ, PREFIXED),
    ]
    return bindings


def scram_env(broker: SecureBroker, user: str, secrets: Path, password: str | None = None) -> dict[str, str]:
    """The settings of ``user`` on the SASL_SSL listener, its password given by file (a Docker secret)."""
    path = secrets / f"{user}-{uuid.uuid4().hex[:6]}"
    path.write_text((password or broker.passwords[user]) + "\n")
    return {
        "KAFKA_BOOTSTRAP_SERVERS": broker.sasl,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": user,
        "KAFKA_SASL_PASSWORD_FILE": str(path),
        "KAFKA_SSL_CA_LOCATION": str(broker.certs / "ca.crt"),
    }


def cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "connector.cli", *args],
        env={**os.environ, "LOG_FORMAT": "text", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done, time.monotonic() - started


def _run_env(broker: SecureBroker, n: Names, sim_port: int, tmp: Path, **extra: str) -> dict[str, str]:
    return {
        **connector_env(broker.sasl, sim_port, TOKENS, tmp),
        **n.run_env(),
        **scram_env(broker, "connector", tmp),
        **extra,
    }


# -- good credentials: produce and read back ---------------------------------------------------------------
def test_run_streams_over_sasl_ssl_scram_and_consume_reads_it_back_and_no_secret_shows(
    secure: SecureBroker, tmp_path: Path
) -> None:
    n = Names()
    grant(secure, least_privilege(n))
    # librdkafka at its most talkative, through the properties file: its own lines must not show them either
    properties = tmp_path / "client.properties"
    properties.write_text("debug=security,broker,conf\nsocket.keepalive.enable=true\n")
    metrics = free_port()
    with running_simulator(SimulatorConfig(port=0, rate=5, order_rate=1), INSTRUMENTS) as sim:
        env = _run_env(
            secure, n, sim.port, tmp_path, METRICS_PORT=str(metrics), LOG_LEVEL="DEBUG",
            KAFKA_CONFIG_FILE=str(properties),
        )  # fmt: skip
        run = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "run"],
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(lambda: http_get(metrics, "/healthz")[0] == 200, 60, "the connector to be healthy")
            consume, _ = cli(
                "consume",
                env={
                    **scram_env(secure, "consumer", tmp_path),
                    "CONSUME_TOPICS": n.topic("kite.ticks"),
                    "CONSUME_GROUP": f"kite-consume-{n.suffix}",
                    "CONSUME_FROM_BEGINNING": "true",
                    "CONSUME_MAX_RECORDS": "5",
                },
            )
            scraped = http_get(metrics, "/metrics")[1] + http_get(metrics, "/healthz")[1]
        finally:
            run.send_signal(signal.SIGTERM)
            out, err = run.communicate(timeout=30)
    assert consume.returncode == 0, consume.stderr[-2000:]
    lines = consume.stdout.splitlines()
    assert len(lines) == 5 and all('"type": "Tick"' in line for line in lines)
    assert run.returncode == 0, err[-3000:]
    assert "[redacted]" in err, "librdkafka's configuration dump was logged (and redacted)"
    assert 'kafka_errors_total{kind="authentication"} 0.0' in scraped
    for secret in (secure.passwords["connector"], secure.passwords["consumer"]):
        for shown in (out, err, consume.stdout, consume.stderr, scraped):
            assert secret not in shown


def test_a_mutual_tls_client_produces_and_reads_back(secure: SecureBroker, tmp_path: Path) -> None:
    n = Names()
    principal = MTLS_CLIENT  # the certificate's CN, by the broker's principal mapping rules
    reads = [
        _acl(principal, ResourceType.TOPIC, n.topic("kite.ticks"), READ),
        _acl(principal, ResourceType.GROUP, f"read-{n.suffix}", READ),
    ]
    grant(secure, [*least_privilege(n, connector=principal), *reads])
    tls = secure.mutual_tls()
    with running_simulator(SimulatorConfig(port=0, rate=5), INSTRUMENTS) as sim:
        settings = connector_settings(
            secure.mtls,
            sim.port,
            TOKENS,
            tmp_path,
            **n.run_env(),
            KAFKA_SECURITY_PROTOCOL="SSL",
            KAFKA_SSL_CA_LOCATION=tls["ssl.ca.location"],
            KAFKA_SSL_CERTIFICATE_LOCATION=tls["ssl.certificate.location"],
            KAFKA_SSL_KEY_LOCATION=tls["ssl.key.location"],
        )
        with running_connector(settings) as connector:
            stats = connector.shard_stats[0]
            wait_until(lambda: stats.delivered[n.topic("kite.ticks")] >= 20, 60, "ticks over mutual TLS")
    consumer = Consumer({**tls, "group.id": f"read-{n.suffix}", "auto.offset.reset": "earliest"})
    consumer.subscribe([n.topic("kite.ticks")])
    reader, kinds = AvroReader(), list[str]()
    deadline = time.monotonic() + 30
    while len(kinds) < 20 and time.monotonic() < deadline:
        for msg in consumer.consume(100, 0.5):
            assert msg.error() is None, msg.error()
            kinds.append(reader.read(msg.value() or b"")[0])
    consumer.close()
    assert len(kinds) >= 20 and set(kinds) == {"Tick"}


# -- each refusal: exit 2 within 30 s, one line naming the cause ------------------------------------------
def _refusal_cases(secure: SecureBroker, plain: str, tmp: Path) -> dict[str, tuple[str, dict[str, str], str]]:
    n, without_txn = Names(), Names()
    # the consumer may see every topic of the connector (so that what is missing is WRITE, not visibility)
    visible = [_acl("consumer", ResourceType.TOPIC, t, READ) for t in n.connector_topics[2:]]
    grant(secure, [*least_privilege(n), *visible])
    grant(secure, [b for b in least_privilege(without_txn) if b.restype != ResourceType.TRANSACTIONAL_ID])
    admin = _admin(secure)  # the topics exist, so that what is checked is the ACL, not creation
    topics = [*n.connector_topics, without_txn.topic("kite.ticks")]
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        future.result(timeout=30)
    candles = {**without_txn.candles_env(), "CANDLES_INSTANCE_ID": "one"}
    run = {**connector_env(secure.sasl, 1, TOKENS, tmp), **n.run_env()}
    connector = {**run, **scram_env(secure, "connector", tmp)}
    consumer = scram_env(secure, "consumer", tmp)
    tls_only = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_LOCATION": str(secure.certs / "ca.crt")}
    wrong = scram_env(secure, "connector", tmp, password="not-the-password")
    return {
        "wrong password": ("run", {**run, **wrong}, "Kafka authentication failed for User:connector with"),
        "unknown user": (
            "run",
            {**connector, "KAFKA_SASL_USERNAME": "mallory"},
            "Kafka authentication failed for User:mallory",
        ),
        "CA mismatch": (
            "run",
            {**connector, "KAFKA_SSL_CA_LOCATION": str(secure.certs / "other/ca.crt")},
            "is not signed by a CA in KAFKA_SSL_CA_LOCATION",
        ),
        "host name mismatch": (
            "run",
            {**connector, "KAFKA_BOOTSTRAP_SERVERS": secure.sasl.replace("127.0.0.1", "localhost")},
            "does not name localhost",
        ),
        "plaintext client on a TLS listener": (
            "run",
            {**run, "KAFKA_BOOTSTRAP_SERVERS": secure.sasl},
            f"wrong protocol: the listener at {secure.sasl} speaks TLS, but KAFKA_SECURITY_PROTOCOL=PLAIN",
        ),
        "TLS client on a plaintext listener": (
            "run",
            {**run, "KAFKA_BOOTSTRAP_SERVERS": plain, **tls_only},
            f"wrong protocol: the listener at {plain} does not speak TLS",
        ),
        "run without WRITE on its ticks topic": (
            "run",
            {**run, **consumer},
            f"User:consumer may not write to topic {n.topic('kite.ticks')} (missing ACL: WRITE on Topic:",
        ),
        "consume without READ on its group": (
            "consume",
            {**consumer, "CONSUME_TOPICS": n.topic("kite.ticks"), "CONSUME_GROUP": "not-granted"},
            "may not join consumer group not-granted (missing ACL: READ on Group:not-granted)",
        ),
        "candles without its transactional id": (
            "candles",
            {**candles, **scram_env(secure, "candles", tmp)},
            f"may not use transactional id {candles['CANDLES_GROUP']}-one (missing ACL: WRITE on Transact",
        ),
    }


def test_each_refusal_exits_2_within_30_s_with_one_line_naming_its_cause(
    secure: SecureBroker, kafka_bootstrap: str, tmp_path: Path
) -> None:
    failures = []
    for case, (command, env, cause) in _refusal_cases(secure, kafka_bootstrap, tmp_path).items():
        done, seconds = cli(command, env=env, timeout=60)
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        print(f"[{case}] exit {done.returncode} in {seconds:.1f} s: {last}")
        if (
            done.returncode != 2
            or seconds > 30
            or not last.startswith("kite-connector: ")
            or cause not in last
        ):
            failures.append(f"{case}: exit {done.returncode} after {seconds:.1f} s:\n{done.stderr[-1500:]}")
        elif "Traceback" in done.stderr:
            failures.append(f"{case}: a traceback:\n{done.stderr[-1500:]}")
        elif command != "candles" and len(done.stderr.strip().splitlines()) != 1:  # candles logs its start
            failures.append(f"{case}: more than the one line:\n{done.stderr[-1500:]}")
    assert not failures, "\n\n".join(failures)


def test_the_broker_enforces_least_privilege(secure: SecureBroker) -> None:
    n = Names()
    group = _acl(
        "connector", ResourceType.GROUP, f"g-{n.suffix}", READ
    )  # a group it may use: only the topic is denied
    grant(secure, [*least_privilege(n), group])
    ticks, state = n.topic("kite.ticks"), f"{n.candles_prefix}state"
    admin = _admin(secure)
    for future in admin.create_topics([NewTopic(ticks, 1, 1), NewTopic(state, 1, 1)]).values():
        future.result(timeout=30)
    # an unauthenticated client (TLS, no SASL) gets nothing through
    tls_only = {"security.protocol": "SSL", "ssl.ca.location": str(secure.certs / "ca.crt")}
    anonymous = Producer({"bootstrap.servers": secure.sasl, **tls_only, "message.timeout.ms": 3000})
    refused: list[KafkaError | None] = []
    anonymous.produce(ticks, b"x", on_delivery=lambda err, msg: refused.append(err))
    anonymous.flush(10)
    assert len(refused) == 1 and refused[0] is not None, "not delivered"
    # the consumer principal may read ticks but not produce them
    errors: list[KafkaError | None] = []
    consumer_producer = Producer({**secure.scram("consumer"), "message.timeout.ms": 5000})
    try:
        consumer_producer.produce(ticks, b"x", on_delivery=lambda err, msg: errors.append(err))
        consumer_producer.flush(10)
    except KafkaException as exc:  # refused before it was even queued
        errors.append(exc.args[0])
    assert [e.code() if e else None for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    # the connector principal may not read the candle processor's state
    reader = Consumer({**secure.scram("connector"), "group.id": f"g-{n.suffix}", "enable.auto.commit": False})
    reader.subscribe([state])
    deadline, error = time.monotonic() + 20, None
    while error is None and time.monotonic() < deadline:
        message = reader.poll(0.5)
        error = message.error() if message is not None else None
    reader.close()
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error
    # and nothing was written by either
    check = Consumer({**secure.scram("admin"), "group.id": f"c-{n.suffix}", "enable.partition.eof": True})
    check.assign([TopicPartition(ticks, 0, 0)])
    first = check.poll(10)
    check.close()
    error = first.error() if first is not None else None
    assert error is not None and error.code() == KafkaError._PARTITION_EOF


# -- at run time ------------------------------------------------------------------------------------------
def test_an_acl_removed_at_run_time_shows_in_healthz_and_ends_in_exit_3(
    secure: SecureBroker, tmp_path: Path
) -> None:
    n = Names()
    grant(secure, least_privilege(n))
    metrics = free_port()
    with running_simulator(SimulatorConfig(port=0, rate=5), INSTRUMENTS) as sim:
        env = _run_env(
            secure, n, sim.port, tmp_path, METRICS_PORT=str(metrics), CONNECTION_FAILURE_LIMIT="2",
            CONNECTION_FAILURE_WINDOW_SECONDS="120", KITE_RECONNECT_MAX_DELAY="1",
        )  # fmt: skip
        run = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "run"],
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(lambda: http_get(metrics, "/healthz")[0] == 200, 60, "the connector to be healthy")
            ticks = n.topic("kite.ticks")
            write = AclBindingFilter(
                ResourceType.TOPIC, ticks, LITERAL, "User:connector", "*", WRITE, AclPermissionType.ALLOW
            )
            admin = _admin(secure)
            for future in admin.delete_acls([write]).values():
                assert len(future.result(timeout=30)) == 1
            removed_at = time.monotonic()
            health: list[tuple[int, str]] = []

            def unhealthy() -> bool:
                health.append(http_get(metrics, "/healthz"))
                return health[-1][0] == 503

            wait_until(unhealthy, 30, "/healthz to say so")
            scraped = http_get(metrics, "/metrics")[1]
            code = run.wait(timeout=90)
            took = time.monotonic() - removed_at
        finally:
            if run.poll() is None:
                run.kill()
            err = run.communicate()[1]
    assert f"may not write to topic {ticks}" in health[-1][1], health[-1]
    authorization = next(
        x for x in scraped.splitlines() if x.startswith('kafka_errors_total{kind="authorization"}')
    )
    assert float(authorization.split()[-1]) >= 1
    assert code == 3, err[-3000:]
    print(f"\n[security] exit 3 {took:.1f} s after the ACL was removed")
    assert "connection_failures" not in err or "KafkaAccessError" in err


# -- signals during start-up waits ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("command", "wait"), [("run", "kafka"), ("run", "registry"), ("candles", "kafka"), ("consume", "kafka")]
)
def test_a_signal_during_a_start_up_wait_ends_the_process_at_once(
    command: str, wait: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = {**connector_env(f"127.0.0.1:{free_port()}", 1, TOKENS, tmp_path), "LOG_FORMAT": "text"}
    waiting = "waiting for Kafka"
    if wait == "registry":
        env |= {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_FRAMING": "confluent",
                "SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{free_port()}"}  # fmt: skip
        waiting = "not reachable"
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", command],
            env={**os.environ, **env},
            cwd=ROOT,
            stderr=stderr,
        )
        wait_until(lambda: waiting in log.read_text(), 30, f"'{waiting}' in the log")
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    took = time.monotonic() - signalled
    assert code == 128 + signal.SIGTERM, log.read_text()[-2000:]
    assert took < 2, f"{took:.1f} s after SIGTERM"
