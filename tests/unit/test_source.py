"""The listener's pure parts: reconnect delays and the access token source."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from connector.errors import ConfigError
from connector.source import TokenSource, backoff


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    delays = list(itertools.islice(backoff(0.5, 8.0), 12))
    assert 0.25 <= delays[0] <= 0.5
    assert all(4.0 <= d <= 8.0 for d in delays[6:])
    assert len(set(delays)) == len(delays)


def test_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one\n")
    tokens = TokenSource(None, path)
    assert tokens.get() == "one"
    path.write_text("second\n")
    assert tokens.get() == "second"


def test_no_token_at_all_is_a_config_error_and_a_missing_file_says_which() -> None:
    with pytest.raises(ConfigError, match="KITE_ACCESS_TOKEN"):
        TokenSource(None, None)
    with pytest.raises(ConfigError, match="cannot read KITE_ACCESS_TOKEN_FILE /nonexistent/token"):
        TokenSource(None, "/nonexistent/token").get()
