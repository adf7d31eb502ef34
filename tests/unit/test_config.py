"""Settings: one declaration per command, read from flags and the environment, checked at start-up."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
from pathlib import Path

import pytest

from connector.cli import main
from connector.config import (
    COMMANDS,
    CandlesSettings,
    LoginSettings,
    RunSettings,
    markdown_table,
    update_readme,
)
from connector.errors import ConfigError
from connector.ticker import _FIELDS, KafkaOutput

ROOT = Path(__file__).resolve().parents[2]
BASE = {"KITE_API_KEY": "k", "KITE_ACCESS_TOKEN": "secret-token", "KITE_INSTRUMENTS": "256265"}


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    RunSettings.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_flags_and_environment_share_names_and_flags_win() -> None:
    env = {**BASE, "KAFKA_LINGER_MS": "20", "KITE_MODE": "ltp", "KAFKA_BOOTSTRAP_SERVERS": "b:1"}
    settings = RunSettings.load(_args("--kafka-linger-ms", "7", "--kafka-bootstrap-servers", "f:2"), env)
    assert settings.kafka_linger_ms == 7 and settings.kafka.bootstrap_servers == "f:2"
    assert settings.kite_mode == "ltp"
    assert settings.max_in_flight == 50_000


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KITE_WS_URL": "garbage"}, "KITE_WS_URL='garbage': must be a WebSocket URL"),
        ({"KITE_WS_URL": "http://ws.kite.trade"}, "KITE_WS_URL=http://ws.kite.trade: must be a WebSocket"),
        ({"KITE_WS_URL": "wss://host:99999"}, "KITE_WS_URL=wss://host:99999: must be a WebSocket"),
        ({"KAFKA_TOPIC_PARTITIONS": "0"}, "KAFKA_TOPIC_PARTITIONS='0': must be 1 or more"),
        ({"KAFKA_TOPIC_PARTITIONS": "six"}, "KAFKA_TOPIC_PARTITIONS='six': invalid literal"),
        ({"MAX_IN_FLIGHT": "-5"}, "MAX_IN_FLIGHT='-5': must be 1 or more"),
        ({"KAFKA_LINGER_MS": "soon"}, "KAFKA_LINGER_MS='soon'"),
        ({"BACKPRESSURE_POLICY": "drop"}, "BACKPRESSURE_POLICY='drop': must be one of block, conflate"),
        ({"DEAD_LETTER_MAX_BYTES": "2000000"}, "DEAD_LETTER_MAX_BYTES must be at most 500000"),
        ({"KITE_ACCESS_TOKEN": ""}, "set KITE_ACCESS_TOKEN or KITE_ACCESS_TOKEN_FILE"),
        ({"KAFKA_FRAMING": "confluent"}, "KAFKA_FRAMING=confluent needs SCHEMA_REGISTRY_URL"),
    ],
)
def test_bad_settings_stop_start_up_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        RunSettings.load(environ={**BASE, **env})


def test_secrets_are_never_echoed_back(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError) as info:
        RunSettings.load(environ={**BASE, "KITE_WS_URL": "https://x/?access_token=secret-token"})
    assert "secret-token" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        RunSettings.load(environ={**BASE, "KITE_MODE": "secret-token"})
    assert "secret-token" in str(info.value), "only secrets are hidden"
    assert "secret-token" not in repr(RunSettings.load(environ=BASE))
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "[env KITE_ACCESS_TOKEN; default (secret, none)]" in help_text


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
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.kafka_linger_ms = 8  # type: ignore[misc]


def test_an_old_name_is_still_read_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "connector.config"):
        settings = RunSettings.load(environ={**BASE, "SPOOL_DIR": "/var/orders"})
    assert settings.order_log_dir == "/var/orders"
    assert "SPOOL_DIR is deprecated" in caplog.text
    newer = RunSettings.load(environ={**BASE, "SPOOL_DIR": "/old", "ORDER_LOG_DIR": "/new"})
    assert newer.order_log_dir == "/new", "the new name wins"


def test_groups_share_one_declaration_between_commands() -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "b:9", "SCHEMA_REGISTRY_URL": "http://r", "KAFKA_TOPIC_PARTITIONS": "3"}
    run, candles = RunSettings.load(environ={**BASE, **env}), CandlesSettings.load(environ=env)
    assert run.kafka == candles.kafka and run.registry == candles.registry and run.layout == candles.layout
    assert candles.kafka.client_config()["bootstrap.servers"] == "b:9"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_declares_each_name_once(command: str) -> None:
    names = [s.env for s in COMMANDS[command].declared()]
    assert len(names) == len(set(names))


def test_the_readme_tables_are_the_declarations() -> None:
    readme = (ROOT / "README.md").read_text()
    fix = "run `python -m connector.config README.md`"
    for command, declaration in COMMANDS.items():
        found = re.search(rf"<!-- settings:{command} -->\n(.*?)\n<!-- /settings:{command} -->", readme, re.S)
        assert found, f"README.md has no settings table for {command}: {fix}"
        assert found.group(1) == markdown_table(declaration), (
            f"README.md's {command} table differs from its declaration: {fix}"
        )


def test_readme_tables_are_written_between_their_markers_and_nothing_else_moves() -> None:
    text = "head\n<!-- settings:login -->\n<!-- /settings:login -->\ntail\n"
    assert update_readme(text) == (
        f"head\n<!-- settings:login -->\n{markdown_table(LoginSettings)}\n<!-- /settings:login -->\ntail\n"
    )
    with pytest.raises(ValueError, match="has no <!-- /settings:login -->"):
        update_readme("<!-- settings:login -->\nno end")


def test_kafka_output_fields_are_run_settings_with_their_defaults() -> None:
    declared = {s.env: s for s in RunSettings.declared()}
    output = KafkaOutput("b:1")
    for name, env in _FIELDS.items():
        assert env in declared, f"KafkaOutput.{name} names no run setting"
        if name not in ("bootstrap_servers", "metrics_port"):  # required; off unless asked
            assert getattr(output, name) == declared[env].default, name
    from connector.ticker import KiteTicker

    ticker = KiteTicker(
        "k", "t", kafka=KafkaOutput("b:1", max_in_flight=7, settings={"KAFKA_LINGER_MS": "9"})
    )
    assert (ticker.settings.max_in_flight, ticker.settings.kafka_linger_ms) == (7, 9)
    assert ticker.settings.kafka.bootstrap_servers == "b:1"
    with pytest.raises(ConfigError, match="KAFKA_LINGER_MS='x'"):
        KiteTicker("k", "t", kafka=KafkaOutput("b:1", settings={"KAFKA_LINGER_MS": "x"}))
