"""Avro: the schemas of ``schemas/``, serializers for the connector's records, framings, and a reader."""

from connector.serde._framing import (
    CONFLUENT_MAGIC,
    FINGERPRINT_HEADER,
    SINGLE_OBJECT_MAGIC,
    Frame,
    split_frame,
)
from connector.serde._records import DeadLetter, dead_letter_dict, order_update_dict, tick_dict
from connector.serde._registry import check_registry, registry_client
from connector.serde._schemas import SCHEMA_FILES, AvroSchema, load_schema, parse_schema_text, schema_dir
from connector.serde._serializers import (
    FRAMINGS,
    AvroReader,
    Serializer,
    Serializers,
    build_serializers,
    fastavro_encoder,
)
from connector.serde._tick import encode_tick
from connector.serde._transcode import (
    NamedTranscoded,
    Transcoded,
    Transcoder,
    native_transcode,
    record_key,
    record_timestamp,
    transcode,
    transcode_py,
)

__all__ = [
    "CONFLUENT_MAGIC",
    "FINGERPRINT_HEADER",
    "FRAMINGS",
    "SCHEMA_FILES",
    "SINGLE_OBJECT_MAGIC",
    "AvroReader",
    "AvroSchema",
    "DeadLetter",
    "Frame",
    "NamedTranscoded",
    "Serializer",
    "Serializers",
    "Transcoded",
    "Transcoder",
    "build_serializers",
    "check_registry",
    "dead_letter_dict",
    "encode_tick",
    "fastavro_encoder",
    "load_schema",
    "native_transcode",
    "order_update_dict",
    "parse_schema_text",
    "record_key",
    "record_timestamp",
    "registry_client",
    "schema_dir",
    "split_frame",
    "tick_dict",
    "transcode",
    "transcode_py",
]
