"""Settings: one declaration per command, read from flags and the environment, checked at start-up."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
from pathlib import Path

import pytest

from connector.cli import main
from connector.config import (
    COMMANDS,
    CandlesSettings,
    ConsumeSettings,
    KafkaClient,
    LoginSettings,
    RunSettings,
    markdown_table,
    readme_tables,
    update_readme,
)
from connector.errors import ConfigError
from connector.serde import registry_client
from connector.ticker import _FIELDS, KafkaOutput
from tests.harness import client_properties

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
    tables = readme_tables()
    assert set(COMMANDS) < set(tables)
    for name, table in tables.items():
        found = re.search(rf"<!-- settings:{name} -->\n(.*?)\n<!-- /settings:{name} -->", readme, re.S)
        assert found, f"README.md has no settings table for {name}: {fix}"
        assert found.group(1) == table, f"README.md's {name} table differs from its declaration: {fix}"


def test_readme_tables_are_written_between_their_markers_and_nothing_else_moves() -> None:
    text = "head\n<!-- settings:login -->\n<!-- /settings:login -->\ntail\n"
    assert update_readme(text) == (
        f"head\n<!-- settings:login -->\n{markdown_table(LoginSettings)}\n<!-- /settings:login -->\ntail\n"
    )
    with pytest.raises(ValueError, match="has no <!-- /settings:login -->"):
        update_readme("<!-- settings:login -->\nno end")
    start, end = "<!-- settings:registry -->", "<!-- /settings:registry -->"  # a shared group's own table
    assert update_readme(f"{start}\n{end}") == f"{start}\n{readme_tables()['registry']}\n{end}"


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


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HA_GROUP": "g", "BACKPRESSURE_POLICY": "conflate"}, "HA_GROUP needs BACKPRESSURE_POLICY=block"),
        ({"HA_GROUP": "g", "HA_BUFFER_SECONDS": "0"}, "HA_BUFFER_SECONDS must be above 0"),
        ({"HA_GROUP": "a b"}, "HA_GROUP='a b': a name without spaces"),
        ({"HA_SESSION_TIMEOUT_MS": "0"}, "HA_SESSION_TIMEOUT_MS='0': must be 1 or more"),
    ],
)
def test_a_hot_standby_set_refuses_what_would_defeat_it(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        RunSettings.load(environ={**BASE, **env})


def test_a_hot_standby_instance_is_named_by_host_and_process_unless_told() -> None:
    settings = RunSettings.load(environ={**BASE, "HA_GROUP": "g"})
    assert settings.ha_group == "g" and settings.ha_lease_topic == "kite.ha.lease"
    assert settings.ha_instance.endswith(f"-{os.getpid()}")
    assert RunSettings.load(environ={**BASE, "HA_INSTANCE_ID": "blue"}).ha_instance == "blue"


# -- Kafka and registry security --------------------------------------------------------------------------
def _file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_kafka_security_settings_become_the_properties_of_every_client(tmp_path: Path) -> None:
    ca = _file(tmp_path, "ca.crt", "-----BEGIN CERTIFICATE-----\n")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "b:9093",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "connector",
        "KAFKA_SASL_PASSWORD_FILE": _file(tmp_path, "pw", "s3cret-pw\n"),  # as Docker secrets often end
        "KAFKA_SSL_CA_LOCATION": ca,
    }
    run, consume = RunSettings.load(environ={**BASE, **env}), ConsumeSettings.load(environ=env)
    expected = {
        "bootstrap.servers": "b:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "connector",
        "sasl.password": "s3cret-pw",
        "ssl.ca.location": ca,
        "ssl.endpoint.identification.algorithm": "https",  # host names are checked unless turned off
    }
    assert run.kafka.client_config() == expected == consume.kafka.client_config()
    no_check = KafkaClient.load(environ={**env, "KAFKA_SSL_ENDPOINT_IDENTIFICATION": "false"})
    assert no_check.client_config()["ssl.endpoint.identification.algorithm"] == "none"
    assert KafkaClient.load(environ={}).client_config() == {
        "bootstrap.servers": "localhost:9092",
        "ssl.endpoint.identification.algorithm": "https",
    }


def test_the_benchmarks_clients_of_an_external_broker_connect_with_the_kafka_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "b:9093")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")
    assert client_properties("b:9093")["security.protocol"] == "SSL"
    assert client_properties("127.0.0.1:1") == {"bootstrap.servers": "127.0.0.1:1"}, "a broker of its own"


def test_a_properties_file_is_passed_through_and_the_settings_win_over_it(tmp_path: Path) -> None:
    # What Confluent Cloud's "client configuration" download looks like, plus any librdkafka property.
    properties = _file(
        tmp_path,
        "client.properties",
        "# from the console\nbootstrap.servers=cloud:9092\nsecurity.protocol=SASL_SSL\n"
        "sasl.mechanisms=PLAIN\nsasl.username=KEY\nsasl.password=SECRET\n\n! a comment\n"
        "socket.keepalive.enable = true\n",
    )
    from_file = KafkaClient.load(environ={"KAFKA_CONFIG_FILE": properties})
    config = from_file.client_config()
    assert config["bootstrap.servers"] == "cloud:9092" and from_file.servers == "cloud:9092"
    assert (config["sasl.mechanism"], config["sasl.password"], config["socket.keepalive.enable"]) == (
        "PLAIN",
        "SECRET",
        "true",
    )
    explicit = KafkaClient.load(
        environ={
            "KAFKA_CONFIG_FILE": properties,
            "KAFKA_BOOTSTRAP_SERVERS": "mine:1",
            "KAFKA_SASL_USERNAME": "me",
        }
    )
    assert (explicit.servers, explicit.client_config()["sasl.username"]) == ("mine:1", "me")
    assert "SECRET" not in repr(from_file) and "SECRET" not in repr(RunSettings.load(environ={**BASE}))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"KAFKA_SASL_MECHANISM": "PLAIN"},
            "KAFKA_SASL_MECHANISM=PLAIN needs KAFKA_SECURITY_PROTOCOL=SASL_SSL",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_MECHANISM",
        ),
        (
            {"KAFKA_SASL_USERNAME": "u"},
            "KAFKA_SASL_USERNAME is set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT does",
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "KAFKA_SASL_USERNAME": "u",
            },
            "KAFKA_SASL_MECHANISM=SCRAM-SHA-512 needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
        ),
        (
            {"KAFKA_SASL_PASSWORD": "p", "KAFKA_SASL_PASSWORD_FILE": "/run/secrets/p"},
            "set KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, not both",
        ),
        (
            {"KAFKA_SASL_PASSWORD_FILE": "/nonexistent/pw"},
            "KAFKA_SASL_PASSWORD_FILE=/nonexistent/pw: cannot read",
        ),
        (
            {"KAFKA_SSL_CA_LOCATION": "/etc/hosts"},
            "KAFKA_SSL_CA_LOCATION is set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_LOCATION": "/nonexistent/ca.crt"},
            "KAFKA_SSL_CA_LOCATION=/nonexistent/ca.crt: no such file",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTIFICATE_LOCATION": "/etc/hosts"},
            "KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION go together",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "OAUTHBEARER"},
            "KAFKA_SASL_MECHANISM=OAUTHBEARER needs KAFKA_SASL_OAUTHBEARER_METHOD=oidc",
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": "OAUTHBEARER",
                "KAFKA_SASL_OAUTHBEARER_METHOD": "oidc",
                "KAFKA_SASL_OAUTHBEARER_CLIENT_ID": "id",
            },
            "KAFKA_SASL_OAUTHBEARER_METHOD=oidc needs KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET and "
            "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL",
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": "PLAIN",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD": "p",
                "KAFKA_SASL_OAUTHBEARER_CLIENT_ID": "id",
            },
            "KAFKA_SASL_OAUTHBEARER_CLIENT_ID needs KAFKA_SASL_MECHANISM=OAUTHBEARER",
        ),
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL='TLS': must be one of PLAINTEXT, SSL"),
        ({"SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "u:p"}, "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO is set but"),
        (
            {"SCHEMA_REGISTRY_URL": "https://r", "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "no-colon"},
            "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO must be user:password",
        ),
        (
            {"SCHEMA_REGISTRY_URL": "https://u:p@r", "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "u:p"},
            "SCHEMA_REGISTRY_URL carries user:password and SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO is set",
        ),
    ],
)
def test_security_settings_that_cannot_work_stop_start_up_naming_the_variables(
    env: dict[str, str], message: str
) -> None:
    for command in (RunSettings, CandlesSettings, ConsumeSettings):
        with pytest.raises(ConfigError, match=re.escape(message)):
            command.load(environ={**BASE, **env})


def test_a_bad_line_of_the_properties_file_is_named_by_number_only(tmp_path: Path) -> None:
    path = _file(tmp_path, "bad.properties", "security.protocol=SASL_SSL\nsasl.password hunter2\n")
    with pytest.raises(ConfigError, match="line 2: not a key=value line") as info:
        KafkaClient.load(environ={"KAFKA_CONFIG_FILE": path})
    assert "hunter2" not in str(info.value)


def test_the_registry_client_config_carries_basic_auth_and_the_ca(tmp_path: Path) -> None:
    import certifi  # a real bundle of CA certificates (requests' dependency)

    ca = certifi.where()
    env = {
        "SCHEMA_REGISTRY_URL": "https://registry:8443/apis/ccompat/v7",
        "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE": _file(tmp_path, "ui", "kite:reg-pw\n"),
        "SCHEMA_REGISTRY_CA_LOCATION": ca,
    }
    registry = ConsumeSettings.load(environ=env).registry
    assert registry.client_config() == {
        "url": "https://registry:8443/apis/ccompat/v7",
        "basic.auth.user.info": "kite:reg-pw",
        "ssl.ca.location": ca,
    }
    assert "reg-pw" not in repr(registry)
    client = registry_client(registry.client_config())  # confluent-kafka takes it as it is (no request yet)
    assert "reg-pw" not in repr(client)


# Each secret setting added for Kafka and the registry, with the other settings it needs to be valid.
NEW_SECRETS = {
    "KAFKA_SASL_PASSWORD": {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "u",
    },
    "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET": {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "OAUTHBEARER",
        "KAFKA_SASL_OAUTHBEARER_METHOD": "oidc",
        "KAFKA_SASL_OAUTHBEARER_CLIENT_ID": "id",
        "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": "https://idp/token",
    },
    "KAFKA_SSL_KEY_PASSWORD": {
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CERTIFICATE_LOCATION": "/etc/hosts",
        "KAFKA_SSL_KEY_LOCATION": "/etc/hosts",
    },
    "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": {"SCHEMA_REGISTRY_URL": "https://r"},
}


@pytest.mark.parametrize("secret", sorted(NEW_SECRETS))
def test_each_new_secret_is_hidden_and_has_no_flag(
    secret: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    value = "user:s3cr3t-value"  # a valid basic-auth user info too
    for source in ({secret: value}, {f"{secret}_FILE": _file(tmp_path, "secret", value)}):
        settings = RunSettings.load(environ={**BASE, **NEW_SECRETS[secret], **source})
        assert value not in repr(settings)
        with pytest.raises(ConfigError) as info:  # an error in a neighbouring setting
            RunSettings.load(environ={**BASE, **NEW_SECRETS[secret], **source, "KAFKA_LINGER_MS": "soon"})
        assert "s3cr3t" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        RunSettings.load(environ={**BASE, **NEW_SECRETS[secret], secret: value, f"{secret}_FILE": "/x"})
    assert "s3cr3t" not in str(info.value) and f"{secret}_FILE" in str(info.value)
    for command in ("run", "candles", "consume"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        help_text = capsys.readouterr().out
        assert f"--{secret.lower().replace('_', '-')} " not in help_text and f"{secret}_FILE" in help_text
    with pytest.raises(SystemExit):  # a secret on the command line would show in the process list
        main(["run", f"--{secret.lower().replace('_', '-')}", value])
    assert "s3cr3t" not in capsys.readouterr().err


def test_the_embedding_api_takes_security_settings_and_client_overrides() -> None:
    from connector.ticker import KiteTicker

    def oauth_cb(config: str) -> tuple[str, float]:
        return "token", 0.0

    output = KafkaOutput(
        "b:1",
        settings={"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "OAUTHBEARER"},
        client_overrides={"oauth_cb": oauth_cb},
    )
    config = KiteTicker("k", "t", kafka=output).settings.kafka.client_config()
    assert (config["sasl.mechanism"], config["oauth_cb"]) == ("OAUTHBEARER", oauth_cb)
