"""The Confluent framing against a live Schema Registry (Apicurio, Confluent-compatible API).

The read side is confluent-kafka's own ``AvroDeserializer`` with a real ``SchemaRegistryClient``: no
project code, as a downstream team would read the topics.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import fastavro
import fastavro.utils
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from connector.app import Connector
from connector.config import ConsumeSettings
from connector.consume import consume
from connector.errors import RegistryError
from connector.serde import SCHEMA_FILES, build_serializers, load_schema, parse_schema_text, schema_dir
from connector.simulator import SimulatorConfig, bundled_instruments, running_simulator
from tests.harness import free_port
from tests.integration.helpers import connector_settings, running_connector, sent_log, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INSTRUMENTS = bundled_instruments()
TOKENS = [i.instrument_token for i in INSTRUMENTS if i.instrument_token & 0xFF != 9][:12]


def _read_with_deserializer(
    bootstrap: str, topic: str, client: SchemaRegistryClient, expect: int, reader_schema: str | None = None
) -> list[tuple[str | None, dict[str, Any]]]:
    """(key, value) of every record of ``topic``, through confluent-kafka's AvroDeserializer alone."""
    deserializer = AvroDeserializer(client, reader_schema)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"sr-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[tuple[str | None, dict[str, Any]]] = []
    deadline = time.monotonic() + 120
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                assert msg.error() is None, msg.error()
                value = deserializer(msg.value(), SerializationContext(topic, MessageField.VALUE))
                key = msg.key()
                out.append((key.decode() if key else None, value))
    finally:
        consumer.close()
    return out


def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)


def test_records_read_back_by_confluent_deserializer_and_a_registry_outage_changes_nothing(
    kafka_bootstrap: str, registry_container: tuple[str, str | None], tmp_path: Path
) -> None:
    url, container_id = registry_container
    log = tmp_path / "sent.jsonl"
    config = SimulatorConfig(port=0, rate=10, order_rate=3, seed=16, sent_log=str(log))
    with running_simulator(config, INSTRUMENTS) as sim:
        values = connector_settings(
            kafka_bootstrap,
            sim.port,
            ",".join(f"{t}@full" for t in TOKENS),
            tmp_path,
            KAFKA_FRAMING="confluent",
            SCHEMA_REGISTRY_URL=url,
        )
        with running_connector(values) as connector:
            stats = connector.shard_stats[0]
            wait_until(lambda: stats.delivered.total() >= 200, 60, "records in Kafka")
            if container_id is not None:  # mid-stream, the registry stops answering: ids are cached
                from docker.client import DockerClient

                registry = DockerClient.from_env().containers.get(container_id)
                registry.pause()
                try:
                    before = stats.delivered.total()
                    wait_until(
                        lambda: stats.delivered.total() >= before + 300, 60, "delivery, registry paused"
                    )
                finally:
                    registry.unpause()
            sim.paused = True
            time.sleep(1)
            wait_until(lambda: stats.in_flight == 0, 30, "the stream to drain")
        sim.flush_log()
    assert stats.failed.total() == 0
    sent_ticks, sent_orders = sent_log(log, "tick"), sent_log(log, "order")
    client = SchemaRegistryClient({"url": url})
    for topic in (
        values.kafka_topic_ticks,
        values.kafka_topic_order_updates,
        values.kafka_topic_dead_letters,
    ):
        subject = f"{topic}-value"
        assert subject in client.get_subjects()
        assert client.get_compatibility(subject) == "BACKWARD", "a subject the connector creates"

    ticks = _read_with_deserializer(kafka_bootstrap, values.kafka_topic_ticks, client, len(sent_ticks))
    assert len(ticks) == len(sent_ticks)
    assert all(key == str(tick["instrument_token"]) for key, tick in ticks), "keys: plain UTF-8 tokens"
    fields = ("instrument_token", "volume_traded", "last_price", "oi")
    got = sorted(tuple(tick[f] for f in fields) for _, tick in ticks)
    assert got == sorted(tuple(s[f] for f in fields) for s in sent_ticks)
    assert {tick["mode"] for _, tick in ticks} == {"full"}
    assert all(tick["depth_buy"] and len(tick["depth_buy"]) == 5 for _, tick in ticks)

    orders = _read_with_deserializer(
        kafka_bootstrap, values.kafka_topic_order_updates, client, len(sent_orders)
    )
    assert sorted((o["order_id"], o["status"]) for _, o in orders) == sorted(
        (s["order_id"], s["status"]) for s in sent_orders
    )

    # The project's own readers take the same topics with SCHEMA_REGISTRY_URL: consume and the example.
    consumed = io.StringIO()
    settings = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CONSUME_TOPICS": values.kafka_topic_order_updates,
    }
    settings |= {
        "CONSUME_FROM_BEGINNING": "true",
        "CONSUME_IDLE_EXIT_SECONDS": "5",
        "SCHEMA_REGISTRY_URL": url,
    }
    assert consume(ConsumeSettings.load(environ=settings), consumed, io.StringIO()) == len(sent_orders)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC_TICKS": values.kafka_topic_ticks,
        "SCHEMA_REGISTRY_URL": url,
        "EXAMPLE_MAX_RECORDS": "300",
        "EXAMPLE_GROUP": f"g-{uuid.uuid4().hex[:8]}",
    }
    example = ROOT / "examples" / "strategy_consumer.py"
    run = subprocess.run([sys.executable, str(example)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.splitlines()[-1])["ticks_read"] == 300


# What `run` writes (candles have their own processor and test): tick, order_update, dead_letter.
HISTORY = sorted(p for p in (schema_dir() / "history").glob("*.avsc") if not p.name.startswith("candle."))


@pytest.mark.parametrize("path", HISTORY, ids=[p.stem for p in HISTORY])
def test_data_written_with_an_older_schema_reads_with_the_current_one(
    kafka_bootstrap: str, registry_url: str, path: Path
) -> None:
    old = parse_schema_text(path.read_text())
    kind = next(k for k in SCHEMA_FILES if load_schema(k).name == old.name)
    current = load_schema(kind)
    suffix = uuid.uuid4().hex[:8]
    topics = {k: f"history-{k}-{suffix}" for k in SCHEMA_FILES}
    topic, subject = topics[kind], f"{topics[kind]}-value"
    _create_topic(kafka_bootstrap, topic)
    client = SchemaRegistryClient({"url": registry_url})

    # What an older connector wrote: its schema registered under the subject, records framed with its id.
    written = list(fastavro.utils.generate_many(old.parsed, 25))
    older = AvroSerializer(client, old.text, conf={"auto.register.schemas": True})
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for record in written:
        producer.produce(topic, older(record, SerializationContext(topic, MessageField.VALUE)))
    client.set_compatibility(subject, "FULL")  # stricter than the connector's BACKWARD: kept

    # This connector starts: the current schema joins the subject, then its records follow.
    serializers = build_serializers("confluent", registry_url, topics)
    newer = list(fastavro.utils.generate_many(current.parsed, 5))
    prefix = getattr(serializers, kind).prefix
    for record in newer:
        body = io.BytesIO()
        fastavro.schemaless_writer(body, current.parsed, record)
        producer.produce(topic, prefix + body.getvalue())
    assert producer.flush(30) == 0
    assert client.get_compatibility(subject) == "FULL"

    def as_current(record: dict[str, Any], writer: dict[str, Any]) -> Any:
        body = io.BytesIO()
        fastavro.schemaless_writer(body, writer, record)
        body.seek(0)
        return fastavro.schemaless_reader(body, writer, current.parsed)

    read = _read_with_deserializer(kafka_bootstrap, topic, client, len(written) + 5, current.text)
    assert [value for _, value in read] == [as_current(r, old.parsed) for r in written] + [
        as_current(r, current.parsed) for r in newer
    ]


def _incompatible(schema_text: str) -> str:
    """The schema with its first field's type changed: what the current schema cannot read."""
    schema = json.loads(schema_text)
    first = schema["fields"][0]
    first["type"] = "string" if first["type"] != "string" else "long"
    return json.dumps(schema)


def test_an_incompatible_schema_stops_start_up_with_the_registry_reason(
    kafka_bootstrap: str, registry_url: str, tmp_path: Path
) -> None:
    values = connector_settings(
        kafka_bootstrap,
        free_port(),
        "256265",
        tmp_path,
        KAFKA_FRAMING="confluent",
        SCHEMA_REGISTRY_URL=registry_url,
    )
    subject = f"{values.kafka_topic_ticks}-value"
    client = SchemaRegistryClient({"url": registry_url})
    client.register_schema(subject, Schema(_incompatible(load_schema("tick").text), "AVRO"))
    client.set_compatibility(subject, "BACKWARD")
    with pytest.raises(RegistryError) as raised:
        Connector(values).start()
    message = str(raised.value)
    print(f"\n[registry] {message}")
    assert (
        f"io.kitekafka.v1.Tick under subject {subject!r} as incompatible (compatibility BACKWARD)" in message
    )
    assert message.split("BACKWARD): ", 1)[1].strip(), "the registry's reason follows"
    assert len(client.get_versions(subject)) == 1, "nothing was registered"


@contextlib.contextmanager
def _forwarding(port: int, target: tuple[str, int]) -> Iterator[None]:
    """A TCP forwarder from 127.0.0.1:port to target: the registry 'comes up' at that address."""
    server = socket.create_server(("127.0.0.1", port))
    server.settimeout(0.2)
    stop = threading.Event()

    def pipe(a: socket.socket, b: socket.socket) -> None:
        with a, b, selectors.DefaultSelector() as sel:
            sel.register(a, selectors.EVENT_READ, b)
            sel.register(b, selectors.EVENT_READ, a)
            while not stop.is_set():
                for key, _ in sel.select(0.2):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(target)
            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        server.close()


def test_a_registry_unreachable_at_start_is_waited_for_then_bounded(
    registry_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    target = urlsplit(registry_url)
    port = free_port()
    url = f"http://127.0.0.1:{port}{target.path}"
    topics = {k: f"late-{k}-{uuid.uuid4().hex[:8]}" for k in SCHEMA_FILES}
    done: dict[str, Any] = {}

    def start() -> None:
        try:
            done["serializers"] = build_serializers("confluent", url, topics, registry_timeout=60)
        except Exception as exc:  # reported by the assertion below
            done["error"] = exc

    with caplog.at_level(logging.INFO, logger="connector.serde.registry"):
        thread = threading.Thread(target=start)
        thread.start()
        time.sleep(3)  # nothing listens yet: refused, retried
        assert thread.is_alive()
        with _forwarding(port, (target.hostname or "127.0.0.1", target.port or 80)):
            thread.join(60)
    assert "error" not in done, done.get("error")
    assert done["serializers"].tick.prefix[0] == 0
    waiting = [r.getMessage() for r in caplog.records if "not reachable" in r.getMessage()]
    assert len(waiting) == 1 and "retrying every 1 s for up to 60 s" in waiting[0]

    started = time.monotonic()
    with pytest.raises(RegistryError, match=r"not reachable within 2 s .*SCHEMA_REGISTRY_URL"):
        build_serializers(
            "confluent", f"http://127.0.0.1:{free_port()}/apis/ccompat/v7", topics, registry_timeout=2
        )
    assert time.monotonic() - started < 10
