"""The README is part of the product: it must name every setting and the commands CI runs."""

from __future__ import annotations

from pathlib import Path

from connector.candles import CANDLES_SETTINGS
from connector.config import MARKET_SETTINGS, RUN_SETTINGS, SIMULATOR_SETTINGS
from connector.consume import CONSUME_SETTINGS
from connector.login import LOGIN_SETTINGS

ROOT = Path(__file__).resolve().parents[2]


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        s.env
        for s in (
            *RUN_SETTINGS,
            *SIMULATOR_SETTINGS,
            *CONSUME_SETTINGS,
            *LOGIN_SETTINGS,
            *CANDLES_SETTINGS,
            *MARKET_SETTINGS,
        )
        if f"`{s.env}`" not in readme
    ]
    assert not missing, f"README.md configuration table lacks {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/run.sh" in readme
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
