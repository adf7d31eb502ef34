"""Supervision without services: typed settings, failure budget, sampled logs, bounded waits, dead letters,
and a listener thread that survives whatever its handler raises (on a real socket)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import pytest
from confluent_kafka import Producer
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from connector.cli import main
from connector.config import RunSettings
from connector.errors import ConfigError, SinkError
from connector.kite import Mode
from connector.logs import SampledLog, sample
from connector.runtime import FailureBudget
from connector.sink import KafkaSink, SinkConfig
from connector.source import KiteListener, TokenSource
from connector.stats import Stats

BASE = {"KITE_API_KEY": "k", "KITE_ACCESS_TOKEN": "secret-token", "KITE_INSTRUMENTS": "256265"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KITE_WS_URL": "garbage"}, "KITE_WS_URL='garbage': must be a WebSocket URL"),
        ({"KITE_WS_URL": "http://ws.kite.trade"}, "KITE_WS_URL=http://ws.kite.trade: must be a WebSocket"),
        ({"KITE_WS_URL": "wss://host:99999"}, "KITE_WS_URL=wss://host:99999: must be a WebSocket"),
        ({"KAFKA_TOPIC_PARTITIONS": "0"}, "KAFKA_TOPIC_PARTITIONS='0': must be 1 or more"),
        ({"KAFKA_TOPIC_PARTITIONS": "six"}, "KAFKA_TOPIC_PARTITIONS='six': invalid literal"),
        ({"MAX_IN_FLIGHT": "-5"}, "MAX_IN_FLIGHT='-5': must be 1 or more"),
        ({"DEAD_LETTER_MAX_BYTES": "2000000"}, "DEAD_LETTER_MAX_BYTES must be at most 500000"),
        ({"KITE_ACCESS_TOKEN": ""}, "set KITE_ACCESS_TOKEN or KITE_ACCESS_TOKEN_FILE"),
    ],
)
def test_bad_settings_stop_start_up_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        RunSettings.load(environ={**BASE, **env})


def test_the_url_check_never_shows_the_query_that_carries_the_token() -> None:
    with pytest.raises(ConfigError) as info:
        RunSettings.load(environ={**BASE, "KITE_WS_URL": "https://x/?access_token=secret-token"})
    assert "secret-token" not in str(info.value)


def test_run_with_a_bad_setting_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {**BASE, "KITE_WS_URL": "garbage"}.items():
        monkeypatch.setenv(name, value)
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kite-connector: KITE_WS_URL='garbage'") and "Traceback" not in err


def test_settings_are_typed_and_frozen() -> None:
    settings = RunSettings.load(environ={**BASE, "KAFKA_LINGER_MS": "7"})
    assert settings.kafka_linger_ms == 7 and settings.kite_ws_url == "wss://ws.kite.trade"
    assert "secret-token" not in repr(settings)
    with pytest.raises(AttributeError):
        settings.kafka_linger_ms = 8  # type: ignore[misc]


def test_the_failure_budget_counts_within_its_window_only() -> None:
    now = [0.0]
    budget = FailureBudget(2, 60, clock=lambda: now[0])
    assert budget.spend() and budget.spend()
    now[0] = 61
    assert budget.spend() and budget.spend(), "old failures leave the window"
    assert not budget.spend(), "the third within 60 s is one too many"
    assert all(FailureBudget(None, 60).spend() for _ in range(100))


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


def test_librdkafka_connection_errors_are_sampled(caplog: pytest.LogCaptureFixture) -> None:
    logger = sample(logging.getLogger("test.librdkafka"), interval=30)
    producer = Producer(
        {"bootstrap.servers": "127.0.0.1:1", "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 10},
        logger=logger,
    )
    with caplog.at_level(logging.DEBUG, "test.librdkafka"):
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            producer.poll(0.1)
    refused = [r for r in caplog.records if "Connection refused" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in refused]


def test_a_record_that_cannot_be_queued_gives_up_at_stop_not_never() -> None:
    config = SinkConfig(
        "127.0.0.1:1",
        max_in_flight=1000,
        producer_overrides={"queue.buffering.max.messages": "3", "log_level": "0"},
    )
    sink = KafkaSink(config, Stats())
    threading.Timer(0.5, sink.stop).start()
    started = time.monotonic()
    with pytest.raises(SinkError, match="could not be queued \\(stopping\\)"):
        sink.produce_ticks([(b"1", b"x", 1_700_000_000_000)] * 10, 0.0)
    assert time.monotonic() - started < 2
    assert sink.stats.failed[config.topics.ticks] == 10 - 3, "what was not queued is counted"
    sink.close(0.1)


class _Exploding:
    """A message handler whose second message raises, as a bug in a pipeline would."""

    def __init__(self) -> None:
        self.messages = 0

    def on_message(self, binary: bool, data: bytes, received_ms: int, received: float) -> None:
        self.messages += 1
        if self.messages == 2:
            raise RuntimeError("a bug")

    def service(self) -> float | None:
        return None

    def saturated(self) -> bool:
        return False


def test_whatever_a_handler_raises_the_listener_logs_counts_and_goes_on_with_a_new_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            ws.recv()
            for _ in range(5):
                ws.send(b"\x00\x00")
            for _ in ws:
                pass

    first, second = _Exploding(), _Exploding()
    given: list[Exception] = []

    def supervisor(exc: Exception) -> _Exploding:
        given.append(exc)
        return second

    with serve(handler, "127.0.0.1", 0) as server, caplog.at_level(logging.ERROR):
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}"
        stats = Stats()
        listener = KiteListener(
            "t", url, "key", TokenSource("tok"), {265: Mode.LTP}, first, stats, 3, 0.2, supervisor=supervisor
        )
        listener.start()
        deadline = time.monotonic() + 10
        while len(given) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        alive = listener.is_alive()
        listener.stop()
        listener.join(5)
        server.shutdown()
    assert alive and first.messages == 2 and second.messages == 2, "a new handler took over, and failed too"
    assert [str(e) for e in given] == ["a bug", "a bug"]
    assert stats.failures["RuntimeError"] == 2 and stats.last_failure == "RuntimeError: a bug"
    logged = [r for r in caplog.records if "t failed: RuntimeError: a bug" in r.getMessage()]
    assert len(logged) == 2 and all(r.exc_info for r in logged), "logged once each, with the traceback"


def test_a_supervisor_that_gives_up_ends_the_thread_and_says_why() -> None:
    def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            ws.recv()
            ws.send(b"\x00\x00")
            ws.send(b"\x00\x00")
            for _ in ws:
                pass

    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}"
        listener = KiteListener(
            "t",
            url,
            "key",
            TokenSource("tok"),
            {265: Mode.LTP},
            _Exploding(),
            Stats(),
            3,
            0.2,
            supervisor=lambda exc: None,
        )
        listener.start()
        listener.join(10)
        server.shutdown()
    assert not listener.is_alive()
    assert listener.gave_up == "RuntimeError: a bug"
