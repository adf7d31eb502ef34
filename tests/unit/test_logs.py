"""Logs: a storm of one kind of message is sampled, and secrets are redacted."""

from __future__ import annotations

import logging

import pytest

from connector.logs import SampledLog, redact


def test_a_flood_of_one_kind_of_message_is_logged_as_a_sample_with_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.flood")
    sampled, now = SampledLog(interval=10), [0.0]
    sampled._clock = lambda: now[0]
    logger.addFilter(sampled)
    with caplog.at_level(logging.WARNING, "test.flood"):
        for i in range(10_000):
            logger.warning("dead letter (%d bytes): bad frame at %d", i, i)
        logger.warning("another kind")
        now[0] = 12
        logger.warning("dead letter (%d bytes): bad frame at %d", 1, 2)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:2] == ["dead letter (0 bytes): bad frame at 0", "another kind"]
    assert lines[2] == "dead letter (1 bytes): bad frame at 2 (9999 more like it in the last 12 s)"


def test_redact_replaces_every_secret_and_ignores_empty_ones() -> None:
    assert redact("url?access_token=second&k=key", "second", "", "key") == "url?access_token=***&k=***"
