"""Registration at start-up against a small in-memory registry (the live one: tests/integration)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from connector.errors import RegistryError
from connector.kite import Mode, Tick
from connector.serde import AvroReader, build_serializers, load_schema
from connector.serde._registry import _transport_errors, register_value_schemas, shown_url

TOPICS = {"tick": "kite.ticks", "order_update": "kite.orders", "dead_letter": "kite.dlq", "gap": "kite.gaps"}
CONNECT_ERROR = _transport_errors("ConnectError")[0]


class FakeRegistry:
    """What the connector uses of the Confluent API, with the registry's answers where it refuses."""

    def __init__(self, down_for: int = 0) -> None:
        self.versions: dict[str, list[str]] = {}
        self.schemas: list[str] = []
        self.levels: dict[str, str] = {}
        self.global_level = "NONE"
        self.refuse: dict[str, str] = {}
        self.down_for = down_for  # calls that fail as if nothing listened
        self.calls = 0

    def _answer(self) -> None:
        self.calls += 1
        if self.down_for:
            self.down_for -= 1
            raise CONNECT_ERROR("[Errno 111] Connection refused")

    def get_subjects(self) -> list[str]:
        self._answer()
        return list(self.versions)

    def register_schema(self, subject: str, schema: Schema) -> int:
        self._answer()
        if subject in self.refuse:
            raise SchemaRegistryError(409, 409, self.refuse[subject])
        text = str(schema.schema_str)
        if text not in self.schemas:
            self.schemas.append(text)
        self.versions.setdefault(subject, []).append(text)
        return self.schemas.index(text) + 1

    def get_compatibility(self, subject: str | None = None) -> str:
        self._answer()
        if subject is None:
            return self.global_level
        if subject not in self.levels:
            raise SchemaRegistryError(
                404, 40408, f"Subject '{subject}' does not have subject-level compatibility"
            )
        return self.levels[subject]

    def set_compatibility(self, subject: str, level: str) -> str:
        self._answer()
        self.levels[subject] = level
        return level

    def get_schema(self, schema_id: int) -> Schema:
        return Schema(self.schemas[schema_id - 1], "AVRO")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_confluent_framing_registers_under_topic_name_strategy_with_backward() -> None:
    registry = FakeRegistry()
    serializers = build_serializers("confluent", topics=TOPICS, registry_client=registry)
    data = serializers.tick(Tick(256265, Mode.LTP, False, 24_000.5), 1_764_000_000_123)
    assert data[0] == 0
    assert int.from_bytes(data[1:5], "big") == registry.schemas.index(load_schema("tick").text) + 1
    assert set(registry.versions) == {
        "kite.ticks-value",
        "kite.orders-value",
        "kite.dlq-value",
        "kite.gaps-value",
    }
    assert registry.levels == dict.fromkeys(registry.versions, "BACKWARD")
    assert serializers.tick.headers == []
    kind, value = AvroReader(registry_client=registry).read(data)
    assert (kind, value["instrument_token"], value["last_price"]) == ("Tick", 256265, 24_000.5)


def test_an_existing_subject_keeps_its_level(caplog: pytest.LogCaptureFixture) -> None:
    registry = FakeRegistry()
    registry.versions = {"kite.ticks-value": ["{}"], "kite.orders-value": ["{}"]}
    registry.levels = {"kite.ticks-value": "FULL_TRANSITIVE"}  # orders: none of its own, the global NONE
    with caplog.at_level(logging.WARNING):
        build_serializers("confluent", topics=TOPICS, registry_client=registry)
    assert registry.levels == {
        "kite.ticks-value": "FULL_TRANSITIVE",
        "kite.dlq-value": "BACKWARD",
        "kite.gaps-value": "BACKWARD",
    }
    assert [r.getMessage() for r in caplog.records] == [
        "subject kite.orders-value has compatibility NONE, weaker than BACKWARD: consumers with the newest "
        "schema may fail on older records; the connector leaves the subject's setting alone"
    ]


def test_a_refused_schema_stops_start_up_naming_subject_and_reason() -> None:
    registry = FakeRegistry()
    registry.versions = {"kite.ticks-value": ["{}"]}
    registry.levels = {"kite.ticks-value": "BACKWARD"}
    registry.refuse["kite.ticks-value"] = "Incompatible schema: READER_FIELD_MISSING_DEFAULT_VALUE"
    with pytest.raises(RegistryError) as raised:
        build_serializers("confluent", topics=TOPICS, registry_client=registry)
    message = str(raised.value)
    assert "io.kitekafka.v1.Tick under subject 'kite.ticks-value'" in message
    assert "compatibility BACKWARD" in message and "READER_FIELD_MISSING_DEFAULT_VALUE" in message


def test_an_unreachable_registry_is_waited_for_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    registry, clock = FakeRegistry(down_for=5), Clock()
    wanted = {"kite.ticks-value": load_schema("tick")}
    with caplog.at_level(logging.INFO):
        ids = register_value_schemas(registry, wanted, "http://reg:8081", 30, clock.sleep, clock)
    assert ids == {"kite.ticks-value": 1}
    assert clock.now == 5.0
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("Schema Registry at http://reg:8081 not reachable (ConnectError: ")
    assert messages[0].endswith("retrying every 1 s for up to 30 s")
    assert sum("not reachable" in m for m in messages) == 1
    assert messages[-1] == "Schema Registry at http://reg:8081 reachable; schemas registered"


def test_an_unreachable_registry_fails_after_the_timeout() -> None:
    registry, clock = FakeRegistry(down_for=1000), Clock()
    with pytest.raises(RegistryError, match=r"not reachable within 10 s .*SCHEMA_REGISTRY_TIMEOUT_SECONDS"):
        register_value_schemas(
            registry, {"t-value": load_schema("tick")}, "http://u:secret@reg:8081", 10, clock.sleep, clock
        )
    assert registry.calls == 11 and clock.now == 10.0


def test_credentials_in_the_url_are_never_shown() -> None:
    assert shown_url("https://user:pa55@reg.example:8081/apis") == "https://reg.example:8081/apis"
    assert shown_url("http://reg:8081") == "http://reg:8081"


def test_a_url_the_client_cannot_speak_is_not_retried() -> None:
    def bad_url(*_: Any) -> Any:
        raise _transport_errors("UnsupportedProtocol")[0]("Request URL has an unsupported protocol 'ftp://'")

    registry = FakeRegistry()
    registry.get_subjects = bad_url  # type: ignore[method-assign]
    clock = Clock()
    with pytest.raises(Exception, match="unsupported protocol"):
        register_value_schemas(registry, {"t-value": load_schema("tick")}, "ftp://x", 10, clock.sleep, clock)
    assert clock.now == 0.0
