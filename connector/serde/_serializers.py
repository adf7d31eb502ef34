"""Serializers (record → framed Avro bytes) and the reader (framed bytes → schema name + values)."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import fastavro

from connector.errors import ConfigError, RegistryError, SerializationError
from connector.gaps import Gap, gap_dict
from connector.kite import OrderUpdate, Tick
from connector.serde._framing import FINGERPRINT_HEADER, confluent_frame, single_object_frame, split_frame
from connector.serde._records import DeadLetter, dead_letter_dict, order_update_dict
from connector.serde._registry import register_value_schemas
from connector.serde._registry import registry_client as registry_client_for
from connector.serde._schemas import SCHEMA_FILES, AvroSchema, load_schema, parse_schema_text, schema_dir
from connector.serde._tick import encode_tick, tick_fault

__all__ = ["FRAMINGS", "AvroReader", "Serializer", "Serializers", "build_serializers", "fastavro_encoder"]

FRAMINGS = ("single-object", "confluent")
R = TypeVar("R")


def fastavro_encoder(
    schema: AvroSchema, to_dict: Callable[[R, int], dict[str, Any]]
) -> Callable[[R, int], bytes]:
    """The generic encoder: the record as a dict, written by fastavro's ``schemaless_writer``."""

    def encode(record: R, received_at_ms: int) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema.parsed, to_dict(record, received_at_ms))
        return buf.getvalue()

    return encode


@dataclass(slots=True)
class Serializer(Generic[R]):
    """Turns one kind of record into framed Avro bytes; ``headers`` go on every Kafka record.

    ``explain`` says what is wrong with a record ``encode`` rejected (None: the encoder's own message).
    """

    schema: AvroSchema
    encode: Callable[[R, int], bytes]
    prefix: bytes
    headers: list[tuple[str, str | bytes | None]]  # the type confluent-kafka's produce() takes
    explain: Callable[[R, int], str | None] | None = None

    def __call__(self, record: R, received_at_ms: int) -> bytes:
        try:
            return self.prefix + self.encode(record, received_at_ms)
        except (ValueError, TypeError, OverflowError, struct.error) as exc:
            why = (self.explain(record, received_at_ms) if self.explain else None) or exc
            raise SerializationError(
                f"{self.schema.name}: cannot write {type(record).__name__}: {why}"
            ) from exc


@dataclass(slots=True)
class Serializers:
    tick: Serializer[Tick]
    order_update: Serializer[OrderUpdate]
    dead_letter: Serializer[DeadLetter]
    gap: Serializer[Gap]

    def headers(self) -> dict[str, list[tuple[str, str | bytes | None]] | None]:
        """Record kind → the Kafka headers its records carry (None where there are none)."""
        return {
            "tick": self.tick.headers or None,
            "order_update": self.order_update.headers or None,
            "dead_letter": self.dead_letter.headers or None,
            "gap": self.gap.headers or None,
        }


def build_serializers(
    framing: str = "single-object",
    registry_url: str | None = None,
    topics: dict[str, str] | None = None,
    registry_client: Any = None,
    registry_timeout: float = 60.0,
) -> Serializers:
    """Serializers for the record kinds the connector writes.

    ``single-object`` needs no registry: each message starts with ``C3 01`` and the schema's fingerprint
    (also sent as the ``avro.fingerprint`` header). ``confluent`` registers each schema under
    ``<topic>-value`` (TopicNameStrategy) once, here, and prefixes messages with its id (see
    ``_registry.register_value_schemas``: compatibility, refusals, waiting up to ``registry_timeout``
    seconds for an unreachable registry); ``registry_client`` (a ``SchemaRegistryClient``) is used instead
    of one built from the URL.
    """
    if framing not in FRAMINGS:
        raise ConfigError(f"KAFKA_FRAMING must be one of {', '.join(FRAMINGS)}, not {framing!r}")
    encoders: dict[str, Callable[[Any, int], bytes]] = {
        "tick": encode_tick,
        "order_update": fastavro_encoder(load_schema("order_update"), order_update_dict),
        "dead_letter": fastavro_encoder(load_schema("dead_letter"), dead_letter_dict),
        "gap": fastavro_encoder(load_schema("gap"), gap_dict),
    }
    # The C and the Python Tick encoders word their errors differently: the fault is named the same for both.
    explain = {"tick": tick_fault}
    built: dict[str, Serializer[Any]]
    if framing == "single-object":
        built = {
            kind: Serializer(load_schema(kind), encode, single_object_frame(load_schema(kind).fingerprint),
                             [(FINGERPRINT_HEADER, load_schema(kind).fingerprint)], explain.get(kind))
            for kind, encode in encoders.items()
        }  # fmt: skip
        return Serializers(built["tick"], built["order_update"], built["dead_letter"], built["gap"])
    if registry_client is None and not registry_url:
        raise ConfigError("KAFKA_FRAMING=confluent needs SCHEMA_REGISTRY_URL")
    # Retries are register_value_schemas' own (bounded by registry_timeout), not the client's.
    client = registry_client or registry_client_for(registry_url or "", retries=0)
    subjects = {kind: f"{(topics or {}).get(kind, kind)}-value" for kind in encoders}
    ids = register_value_schemas(
        client,
        {subjects[kind]: load_schema(kind) for kind in encoders},
        registry_url or "(client given)",
        registry_timeout,
    )
    built = {
        kind: Serializer(
            load_schema(kind), encode, confluent_frame(ids[subjects[kind]]), [], explain.get(kind)
        )
        for kind, encode in encoders.items()
    }
    return Serializers(built["tick"], built["order_update"], built["dead_letter"], built["gap"])


class AvroReader:
    """Reads what the connector wrote: detects the framing, finds the writer's schema, decodes.

    Writer schemas are known by fingerprint (current and ``schemas/history``) or fetched from the
    registry by id; values are resolved to the current schema of the same record, so old data reads too.
    ``registry`` is the registry's URL or the ``Registry`` settings' ``client_config()`` (authentication).
    A record is bad (:class:`SerializationError`) if its schema id is unknown to the registry; a registry
    that does not answer, or refuses us, is not the record's fault (:class:`RegistryError`).
    """

    def __init__(self, registry: str | Mapping[str, Any] | None = None, registry_client: Any = None) -> None:
        self._current = {load_schema(k).name: load_schema(k) for k in SCHEMA_FILES}
        self._by_fingerprint: dict[bytes, AvroSchema] = {s.fingerprint: s for s in self._current.values()}
        for path in sorted((schema_dir() / "history").glob("*.avsc")):
            old = parse_schema_text(path.read_text())
            self._by_fingerprint.setdefault(old.fingerprint, old)
        self._by_id: dict[int, AvroSchema] = {}
        self._registry = registry_client or (registry_client_for(registry) if registry else None)

    def _writer(self, ref: bytes | int) -> AvroSchema:
        if isinstance(ref, bytes):
            found = self._by_fingerprint.get(ref)
            if found is None:
                raise SerializationError(
                    f"unknown schema fingerprint {ref.hex()}: written by a newer connector?"
                )
            return found
        if ref not in self._by_id:
            if self._registry is None:
                raise SerializationError(f"schema id {ref} needs a registry: set SCHEMA_REGISTRY_URL")
            try:
                text = self._registry.get_schema(ref).schema_str
            except Exception as exc:  # the registry client's HTTP and transport errors
                if getattr(exc, "http_status_code", None) == 404:  # an id it never gave: a bad record
                    raise SerializationError(f"schema id {ref} is not in the Schema Registry") from exc
                raise RegistryError(  # not the record's fault (down, refusing our credentials)
                    f"the Schema Registry did not give schema id {ref} ({type(exc).__name__}: {exc}): is it "
                    "up, and are SCHEMA_REGISTRY_URL and its credentials those the connector writes with?"
                ) from exc
            self._by_id[ref] = parse_schema_text(text)
        return self._by_id[ref]

    def writer_schema(self, ref: bytes | int) -> AvroSchema:
        """The schema that wrote messages with this fingerprint (single-object) or registry id."""
        return self._writer(ref)

    def read(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """(record name, values) of one Kafka message value."""
        frame = split_frame(data)
        writer = self._writer(frame.schema_ref)
        reader = self._current.get(writer.name, writer)
        try:
            value = fastavro.schemaless_reader(io.BytesIO(frame.body), writer.parsed, reader.parsed)
        except (ValueError, TypeError, EOFError, IndexError, struct.error) as exc:
            raise SerializationError(f"{writer.name}: body does not decode: {exc}") from exc
        if not isinstance(value, dict):
            raise SerializationError(f"{writer.name}: decoded to {type(value).__name__}, not a record")
        return writer.name.rsplit(".", 1)[-1], value
