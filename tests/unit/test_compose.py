"""The hot-standby override file: its second instance is configured as the connector is, plus HA_*."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _services(name: str) -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())["services"]
    return services


def test_the_standby_is_configured_as_the_connector_is_and_both_join_one_set() -> None:
    base = _services("docker-compose.yml")["connector"]
    override = _services("docker-compose.ha.yml")
    primary, standby = override["connector"]["environment"], override["connector-standby"]["environment"]
    assert {k: v for k, v in standby.items() if not k.startswith("HA_")} == base["environment"]
    for shared in ("HA_GROUP", "HA_SESSION_TIMEOUT_MS"):
        assert primary[shared] == standby[shared]
    assert primary["HA_INSTANCE_ID"] != standby["HA_INSTANCE_ID"]
    assert override["connector-standby"]["volumes"] != base["volumes"], "an order log of its own"
    assert override["connector-standby"]["command"] == base["command"]
