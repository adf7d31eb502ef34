from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import kafka_broker, schema_registry


@pytest.fixture(scope="session")
def kafka_container() -> Iterator[tuple[str, str | None]]:
    """A real single-node KRaft broker for the whole session: (bootstrap servers, container id)."""
    with kafka_broker() as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_container: tuple[str, str | None]) -> str:
    return kafka_container[0]


@pytest.fixture(scope="session")
def registry_container() -> Iterator[tuple[str, str | None]]:
    """A live Confluent-compatible Schema Registry for the whole session: (URL, container id)."""
    with schema_registry() as registry:
        yield registry


@pytest.fixture(scope="session")
def registry_url(registry_container: tuple[str, str | None]) -> str:
    return registry_container[0]
