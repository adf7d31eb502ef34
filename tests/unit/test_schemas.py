"""The .avsc files are the public contract: well formed, documented, and never changed incompatibly."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import avro.schema
import fastavro
import pytest
from fastavro.utils import generate_many

from connector.serde import SCHEMA_FILES, schema_dir

HISTORY = schema_dir() / "history"


def _load(path: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES.values()))
def test_schema_loads_with_fastavro_and_apache_avro(name: str) -> None:
    text = (schema_dir() / name).read_text()
    fastavro.parse_schema(json.loads(text))
    assert avro.schema.parse(text).type == "record"


def _undocumented(schema: Any, where: str) -> list[str]:
    missing: list[str] = []
    if isinstance(schema, dict) and schema.get("type") == "record":
        if not schema.get("doc"):
            missing.append(f"{where} record {schema['name']}")
        for f in schema["fields"]:
            if not f.get("doc"):
                missing.append(f"{where}.{f['name']}")
            missing += _undocumented(f["type"], f"{where}.{f['name']}")
    elif isinstance(schema, list):
        for branch in schema:
            missing += _undocumented(branch, where)
    elif isinstance(schema, dict) and schema.get("type") == "array":
        missing += _undocumented(schema["items"], where)
    return missing


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES.values()))
def test_every_record_and_field_is_documented_and_namespaced(name: str) -> None:
    schema = _load(schema_dir() / name)
    assert schema.get("namespace"), "a namespace keeps names unique across consumers"
    assert _undocumented(schema, name) == []


def incompatibilities(old: dict[str, Any], new: dict[str, Any], samples: int = 200) -> list[str]:
    """Why data written with ``old`` cannot be read with ``new`` (empty when it can)."""
    writer, reader = fastavro.parse_schema(old), fastavro.parse_schema(new)
    problems: list[str] = []
    for record in generate_many(old, samples):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, writer, record)
        buf.seek(0)
        try:
            fastavro.schemaless_reader(buf, writer, reader)
        except Exception as exc:  # fastavro raises several types for a failed resolution
            problems.append(f"{type(exc).__name__}: {exc}")
            break
    return problems


def _history() -> list[tuple[str, Path]]:
    found = []
    for kind, file in SCHEMA_FILES.items():
        stem = file.removesuffix(".avsc")
        versions = sorted(HISTORY.glob(f"{stem}.v*.avsc"))
        assert versions, (
            f"schemas/history has no previous version of {file}: copy it there before changing it"
        )
        found += [(file, v) for v in versions]
        del kind
    return found


@pytest.mark.parametrize(("current", "previous"), _history(), ids=lambda p: Path(str(p)).name)
def test_current_schema_reads_every_previous_version(current: str, previous: Path) -> None:
    problems = incompatibilities(_load(previous), _load(schema_dir() / current))
    assert not problems, (
        f"schemas/{current} can no longer read data written with {previous.name}: {problems[0]}. "
        "Add new fields with a default, never remove or retype a field without one."
    )


def test_the_guard_catches_an_incompatible_change() -> None:
    old = _load(schema_dir() / "tick.avsc")
    new = copy.deepcopy(old)
    new["fields"].append({"name": "venue", "type": "string", "doc": "added without a default"})
    assert incompatibilities(old, new), "a new field without default must be reported"
    retyped = copy.deepcopy(old)
    retyped["fields"][0]["type"] = "string"
    assert incompatibilities(old, retyped)
    compatible = copy.deepcopy(old)
    compatible["fields"].append({"name": "venue", "type": ["null", "string"], "default": None, "doc": "ok"})
    assert incompatibilities(old, compatible) == []
