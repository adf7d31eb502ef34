"""The hot-standby override file: its second instance is configured as the connector is, plus HA_*."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _environment(path: Path, service: str) -> dict[str, str]:
    """``KEY: value`` lines of ``service``'s environment block (the files keep one setting per line)."""
    text = path.read_text()
    block = text[text.index(f"\n  {service}:\n") :]
    block = block[block.index("    environment:\n") + len("    environment:\n") :]
    env = {}
    for line in block.splitlines():
        if not line.startswith("      "):
            break
        found = re.match(r"\s+([A-Z][A-Z0-9_]*): (.*)$", line)
        if found:
            env[found.group(1)] = found.group(2)
    return env


def test_the_standby_is_configured_as_the_connector_is_and_both_join_one_set() -> None:
    base = _environment(ROOT / "docker-compose.yml", "connector")
    primary = _environment(ROOT / "docker-compose.ha.yml", "connector")
    standby = _environment(ROOT / "docker-compose.ha.yml", "connector-standby")
    assert {k: v for k, v in standby.items() if not k.startswith("HA_")} == base
    assert primary["HA_INSTANCE_ID"] != standby["HA_INSTANCE_ID"]
    text = (ROOT / "docker-compose.ha.yml").read_text()
    assert text.count("<<: *ha") == 2, "HA_GROUP and the session timeout: the same for both"
