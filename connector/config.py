"""Configuration in one place: one typed, frozen declaration per command.

A command's settings are a frozen dataclass whose fields are declared with :func:`setting`. The field
name in upper case is the environment variable (``kite_api_key`` is ``KITE_API_KEY``) and, in lower case
with dashes, the flag (``--kite-api-key``); a flag wins over the environment, the environment over the
default. Settings several commands share (the Kafka client, the Schema Registry, topic layout) are
*groups*: a field holding another declaration, whose variables carry that group's ``PREFIX``.

The loader, ``--help`` and the README's tables all read the same declaration (:meth:`Settings.declared`),
so a name, a default or a help text is written once. Values are parsed and checked at start-up; a bad
one raises :class:`ConfigError` naming the variable. Secret values are never echoed back: not in errors,
not in ``repr``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

from connector.errors import ConfigError

__all__ = [
    "CandlesSettings",
    "ConsumeSettings",
    "KafkaClient",
    "LoginSettings",
    "MarketSettings",
    "Registry",
    "RunSettings",
    "Setting",
    "Settings",
    "SimulatorSettings",
    "TopicLayout",
    "check_ws_url",
    "flag",
    "markdown_table",
    "non_negative_float",
    "non_negative_int",
    "positive_int",
    "read_properties",
    "read_secret",
    "readme_tables",
    "update_readme",
]

log = logging.getLogger("connector.config")


# -- parsers: each raises ValueError with what a good value looks like ----------------------------------
def flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be 1 or more")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError("must be between 0 and 1")
    return value


def connection_numbers(text: str) -> tuple[int, ...]:
    return tuple(positive_int(part) for part in text.split(","))


def check_ws_url(url: str) -> None:
    """A ConfigError naming KITE_WS_URL unless ``url`` is a ws:// or wss:// URL with a host."""
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("ws", "wss") and bool(parts.hostname)
        parts.port  # noqa: B018 - reading the port validates it
    except ValueError:
        ok = False
    if not ok:
        shown = urlsplit(url)._replace(query="").geturl() if "://" in url else repr(url)
        raise ConfigError(
            f"KITE_WS_URL={shown}: must be a WebSocket URL such as wss://ws.kite.trade or ws://simulator:8765"
        )


# -- the declaration machinery ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Spec:
    help: str
    parse: Callable[[str], Any]
    secret: bool
    choices: tuple[str, ...]
    aliases: tuple[str, ...]
    cli: bool


_SPEC, _GROUP = "kite.setting", "kite.group"


def setting(
    default: Any,
    help: str,
    parse: Callable[[str], Any] = str,
    *,
    secret: bool = False,
    choices: tuple[str, ...] = (),
    aliases: tuple[str, ...] = (),
    cli: bool = True,
) -> Any:
    """A field that is also a setting. ``aliases`` are older names still read (with a warning). A secret
    with ``cli=False`` has no flag: a flag's value shows in the process list (give it by file instead)."""
    spec = _Spec(help, parse, secret, choices, aliases, cli)
    return field(default=default, repr=not secret, metadata={_SPEC: spec})


def group(cls: type[Settings]) -> Any:
    """A field holding a group of settings shared between commands (see the module's docstring)."""
    return field(default_factory=cls, metadata={_GROUP: cls})


@dataclass(frozen=True, slots=True)
class Setting:
    """One declared setting, as the loader, ``--help`` and the README see it."""

    env: str
    default: Any
    help: str
    parse: Callable[[str], Any]
    secret: bool
    choices: tuple[str, ...]
    aliases: tuple[str, ...]
    cli: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.env.lower().replace("_", "-")

    def convert(self, raw: str) -> Any:
        shown = "(hidden)" if self.secret else repr(raw)
        if self.choices and raw not in self.choices:
            raise ConfigError(f"{self.env}={shown}: must be one of {', '.join(self.choices)}")
        try:
            return self.parse(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{self.env}={shown}: {exc}") from None

    def shown_default(self) -> str:
        if self.secret:
            return "(secret)" if self.default else "(secret, none)"
        return "—" if self.default is None else str(self.default)


RawOf = Callable[[Setting], str | None]


class Settings:
    """Base of every declaration: loading, and the flattened list of its settings."""

    __slots__ = ()
    PREFIX: ClassVar[str] = ""
    README_TABLE: ClassVar[str | None] = None  # a group with a README table of its own (see markdown_table)

    @classmethod
    def declared(cls) -> tuple[Setting, ...]:
        """Every setting of this declaration, groups flattened, in declaration order."""
        return tuple(_walk(cls))

    @classmethod
    def load(
        cls, args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None, **fields: Any
    ) -> Self:
        """From flags, then the environment, then the defaults; ``fields`` (from Python: the embedding
        API) replace whole fields. A bad value raises :class:`ConfigError`."""
        env = os.environ if environ is None else environ

        def raw_of(s: Setting) -> str | None:
            raw = getattr(args, s.env, None) if args is not None else None
            if raw is None:
                raw = env.get(s.env)
            for old in s.aliases if raw in (None, "") else ():
                if env.get(old):
                    log.warning("%s is deprecated: it is read as %s, set that instead", old, s.env)
                    return env[old]
            return raw

        built: Self = _build(cls, raw_of, fields)
        return built

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        for s in cls.declared():
            if not s.cli:
                continue
            help_text = f"{s.help} [env {s.env}; default {s.shown_default()}]"
            parser.add_argument(s.flag, dest=s.env, metavar=s.env, default=None, help=help_text)


def _entries(cls: type[Settings]) -> Iterator[tuple[str, Setting | type[Settings]]]:
    """(field name, its setting or its group's declaration) of each field that is either."""
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if _GROUP in f.metadata:
            yield f.name, f.metadata[_GROUP]
        elif _SPEC in f.metadata:
            spec: _Spec = f.metadata[_SPEC]
            env = cls.PREFIX + f.name.upper()
            yield (
                f.name,
                Setting(
                    env, f.default, spec.help, spec.parse, spec.secret, spec.choices, spec.aliases, spec.cli
                ),
            )


def _walk(cls: type[Settings]) -> Iterator[Setting]:
    for _, entry in _entries(cls):
        if isinstance(entry, Setting):
            yield entry
        else:
            yield from _walk(entry)


def _build(cls: type[Settings], raw_of: RawOf, fields: Mapping[str, Any]) -> Any:
    values: dict[str, Any] = dict(fields)
    for name, entry in _entries(cls):
        if name in fields:
            continue
        if isinstance(entry, Setting):
            raw = raw_of(entry)
            values[name] = entry.default if raw in (None, "") else entry.convert(raw)
        else:
            values[name] = _build(entry, raw_of, {})
    return cls(**values)


def markdown_table(cls: type[Settings]) -> str:
    """The README's table of ``cls``'s settings (a test keeps the README equal to it). A group that has a
    table of its own (``README_TABLE``) is one row there, pointing at it."""
    rows = []
    for _, entry in _entries(cls):
        if isinstance(entry, Setting):
            rows.append(_row(entry))
        elif entry.README_TABLE:
            names = [s.env for s in entry.declared()]
            doc = (entry.__doc__ or "").strip().splitlines()[0].rstrip(".")
            rows.append(
                f"| `{names[0]}`, `{names[1]}`, … ({len(names)} in all) | | {doc[0].lower()}{doc[1:]}: see "
                f"the `{entry.README_TABLE}` table in [Connecting to your Kafka](#connecting-to-your-kafka) |"
            )
        else:
            rows.extend(map(_row, entry.declared()))
    return _table(rows)


def _table(rows: list[str]) -> str:
    return "\n".join(["| variable / flag | default | meaning |", "|---|---|---|", *rows])


def _row(s: Setting) -> str:
    default = s.shown_default()
    default = default if default.startswith(("(", "—")) else f"`{default}`"
    text = s.help.replace("|", "&#124;").replace("<", "&lt;")
    flag = f"`{s.flag}`" if s.cli else "(no flag: environment only)"
    return f"| `{s.env}` / {flag} | {default} | {text} |"


# -- settings that point at files: librdkafka properties, secrets --------------------------------------------
_PROPERTY_ALIASES = {"sasl.mechanisms": "sasl.mechanism", "metadata.broker.list": "bootstrap.servers"}


def read_properties(path: str, variable: str) -> dict[str, str]:
    """The ``key=value`` lines of a librdkafka properties file (``#`` and ``!`` start comments), as kcat's
    ``-F`` reads them. A bad line is named by its number only: it may hold a password."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{variable}={path}: cannot read it ({exc.strerror})") from None
    properties: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        key, equals, value = line.strip().partition("=")
        if not key or key.startswith(("#", "!")):
            continue
        if not equals:
            raise ConfigError(f"{variable}={path} line {number}: not a key=value line")
        key = key.strip()
        properties[_PROPERTY_ALIASES.get(key, key)] = value.strip()
    return properties


def read_secret(path: str, variable: str) -> str:
    """The secret held by a file (a Docker secret), without its final newline; never echoed."""
    try:
        value = Path(path).read_text().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{variable}={path}: cannot read it ({exc.strerror})") from None
    if not value:
        raise ConfigError(f"{variable}={path}: the file is empty")
    return value


def _secret(value: str | None, path: str | None, variable: str) -> str | None:
    """A secret given either as ``variable`` or as the file ``variable_FILE`` names."""
    if value and path:
        raise ConfigError(f"set {variable} or {variable}_FILE, not both")
    return read_secret(path, f"{variable}_FILE") if path else value


def _existing(path: str | None, variable: str) -> None:
    if path and not Path(path).exists():
        raise ConfigError(f"{variable}={path}: no such file")


# -- groups shared by several commands --------------------------------------------------------------------
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
# librdkafka property → the setting that gives it (the cross-field checks name what the user set)
_KAFKA_PROPERTIES = {
    "bootstrap.servers": "KAFKA_BOOTSTRAP_SERVERS",
    "security.protocol": "KAFKA_SECURITY_PROTOCOL",
    "sasl.mechanism": "KAFKA_SASL_MECHANISM",
    "sasl.username": "KAFKA_SASL_USERNAME",
    "sasl.password": "KAFKA_SASL_PASSWORD",
    "sasl.oauthbearer.method": "KAFKA_SASL_OAUTHBEARER_METHOD",
    "sasl.oauthbearer.client.id": "KAFKA_SASL_OAUTHBEARER_CLIENT_ID",
    "sasl.oauthbearer.client.secret": "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
    "sasl.oauthbearer.token.endpoint.url": "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL",
    "sasl.oauthbearer.scope": "KAFKA_SASL_OAUTHBEARER_SCOPE",
    "ssl.ca.location": "KAFKA_SSL_CA_LOCATION",
    "ssl.certificate.location": "KAFKA_SSL_CERTIFICATE_LOCATION",
    "ssl.key.location": "KAFKA_SSL_KEY_LOCATION",
    "ssl.key.password": "KAFKA_SSL_KEY_PASSWORD",
    "ssl.endpoint.identification.algorithm": "KAFKA_SSL_ENDPOINT_IDENTIFICATION",
}
_OIDC = (
    "sasl.oauthbearer.client.id",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.token.endpoint.url",
)


@dataclass(frozen=True, slots=True)
class KafkaClient(Settings):
    """How every Kafka client of the process connects (producer, consumer, admin): brokers, TLS, SASL.

    A client's librdkafka properties are, each winning over the one before: KAFKA_CONFIG_FILE's, these
    settings, what the command sets for that client (acks, group.id, ...), then ``overrides`` (Python
    only). Secrets are read once, at start, from their variable or their ``_FILE``, and have no flag.
    """

    PREFIX: ClassVar[str] = "KAFKA_"
    README_TABLE: ClassVar[str] = "kafka"
    bootstrap_servers: str | None = setting(
        None, "Kafka bootstrap servers (unset: KAFKA_CONFIG_FILE's bootstrap.servers, else localhost:9092)"
    )
    security_protocol: str | None = setting(
        None,
        "how clients talk to the brokers (unset: KAFKA_CONFIG_FILE's, else PLAINTEXT)",
        choices=PROTOCOLS,
    )
    sasl_mechanism: str | None = setting(None, "SASL mechanism (needs a SASL_* protocol)", choices=MECHANISMS)
    sasl_username: str | None = setting(None, "SASL user name (PLAIN, SCRAM; Confluent Cloud: the API key)")
    sasl_password: str | None = setting(None, "SASL password (PLAIN, SCRAM)", secret=True, cli=False)
    sasl_password_file: str | None = setting(None, "file holding the SASL password (a Docker secret)")
    sasl_oauthbearer_method: str | None = setting(
        None,
        "OAUTHBEARER tokens: oidc fetches them from the token endpoint with the client credentials below "
        "(default: librdkafka's unsecured test tokens, or an oauth_cb from Python)",
        choices=("default", "oidc"),
    )
    sasl_oauthbearer_client_id: str | None = setting(None, "OIDC client id")
    sasl_oauthbearer_client_secret: str | None = setting(None, "OIDC client secret", secret=True, cli=False)
    sasl_oauthbearer_client_secret_file: str | None = setting(None, "file holding the OIDC client secret")
    sasl_oauthbearer_token_endpoint_url: str | None = setting(None, "OIDC token endpoint URL")
    sasl_oauthbearer_scope: str | None = setting(None, "OIDC scope (optional)")
    ssl_ca_location: str | None = setting(
        None,
        "CA certificates (PEM file) that signed the brokers' certificates (unset: the system's, which "
        "librdkafka finds by itself)",
    )
    ssl_certificate_location: str | None = setting(None, "client certificate (PEM) for mutual TLS")
    ssl_key_location: str | None = setting(None, "client private key (PEM) for mutual TLS")
    ssl_key_password: str | None = setting(
        None, "password of an encrypted KAFKA_SSL_KEY_LOCATION", secret=True, cli=False
    )
    ssl_key_password_file: str | None = setting(None, "file holding the client key's password")
    ssl_endpoint_identification: bool | None = setting(
        None,
        "check that a broker's certificate names the host dialled (unset: true, unless KAFKA_CONFIG_FILE "
        "sets ssl.endpoint.identification.algorithm)",
        flag,
    )
    config_file: str | None = setting(
        None,
        "librdkafka properties file (key=value lines, as kcat -F reads them): anything librdkafka "
        "supports; the settings above win over it",
    )
    # Only from Python (the embedding API): properties or callbacks (oauth_cb) for every client, applied last.
    overrides: Mapping[str, Any] = field(default_factory=dict, repr=False)
    _config: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        endpoint = self.ssl_endpoint_identification
        given = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": _secret(self.sasl_password, self.sasl_password_file, "KAFKA_SASL_PASSWORD"),
            "sasl.oauthbearer.method": self.sasl_oauthbearer_method,
            "sasl.oauthbearer.client.id": self.sasl_oauthbearer_client_id,
            "sasl.oauthbearer.client.secret": _secret(
                self.sasl_oauthbearer_client_secret,
                self.sasl_oauthbearer_client_secret_file,
                "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
            ),
            "sasl.oauthbearer.token.endpoint.url": self.sasl_oauthbearer_token_endpoint_url,
            "sasl.oauthbearer.scope": self.sasl_oauthbearer_scope,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": _secret(
                self.ssl_key_password, self.ssl_key_password_file, "KAFKA_SSL_KEY_PASSWORD"
            ),
            "ssl.endpoint.identification.algorithm": None
            if endpoint is None
            else ("https" if endpoint else "none"),
        }
        given = {k: v for k, v in given.items() if v is not None}
        from_file = read_properties(self.config_file, "KAFKA_CONFIG_FILE") if self.config_file else {}
        config = {
            "bootstrap.servers": "localhost:9092",
            "ssl.endpoint.identification.algorithm": "https",
            **from_file,
            **given,
        }
        _check_security(config, given, "oauth_cb" in self.overrides)
        object.__setattr__(self, "_config", config)

    @property
    def servers(self) -> str:
        """The bootstrap servers in use (from the setting, the properties file or the default)."""
        return str(self._config["bootstrap.servers"])

    def client_config(self) -> dict[str, Any]:
        """librdkafka properties common to every client (secrets included: never log them)."""
        return {**self._config, **self.overrides}


def _check_security(config: Mapping[str, Any], given: Mapping[str, Any], oauth_cb: bool) -> None:
    """Cross-field checks of the merged properties; messages name the variable, or the file's key."""

    def named(key: str) -> str:
        return _KAFKA_PROPERTIES[key] if key in given else f"{key} in KAFKA_CONFIG_FILE"

    protocol = str(config.get("security.protocol", "PLAINTEXT")).upper()
    mechanism = config.get("sasl.mechanism")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"{named('security.protocol')}={protocol}: must be one of {', '.join(PROTOCOLS)}")
    if not protocol.startswith("SASL_"):
        if mechanism:
            raise ConfigError(
                f"{named('sasl.mechanism')}={mechanism} needs KAFKA_SECURITY_PROTOCOL=SASL_SSL (or "
                f"SASL_PLAINTEXT), not {protocol}"
            )
        for key in (k for k in given if k.startswith("sasl.")):
            raise ConfigError(f"{named(key)} is set but KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL")
    elif not mechanism:
        raise ConfigError(
            f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_MECHANISM ({', '.join(MECHANISMS)})"
        )
    if protocol not in ("SSL", "SASL_SSL"):
        for key in ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location", "ssl.key.password"):
            if key in given:
                raise ConfigError(
                    f"{named(key)} is set but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS"
                )
    if mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (
        config.get("sasl.username") and config.get("sasl.password")
    ):
        raise ConfigError(
            f"{named('sasl.mechanism')}={mechanism} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD "
            "(or KAFKA_SASL_PASSWORD_FILE)"
        )
    _check_oauthbearer(config, given, named, mechanism, oauth_cb)
    if ("ssl.certificate.location" in config) != ("ssl.key.location" in config):
        raise ConfigError(
            "KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION go together (mutual TLS)"
        )
    if "ssl.key.password" in config and "ssl.key.location" not in config:
        raise ConfigError(f"{named('ssl.key.password')} is set but KAFKA_SSL_KEY_LOCATION is not")
    for key in ("ssl.certificate.location", "ssl.key.location", "ssl.ca.location"):
        if config.get(key) != "probe":  # librdkafka's word for "the system's CA locations"
            _existing(config.get(key), named(key))
    if protocol == "SASL_PLAINTEXT" and mechanism == "PLAIN":
        log.warning(
            "KAFKA_SASL_MECHANISM=PLAIN over SASL_PLAINTEXT sends the password unencrypted: use SASL_SSL"
        )


def _check_oauthbearer(
    config: Mapping[str, Any],
    given: Mapping[str, Any],
    named: Callable[[str], str],
    mechanism: Any,
    oauth_cb: bool,
) -> None:
    method = config.get("sasl.oauthbearer.method", "default")
    if mechanism != "OAUTHBEARER":
        for key in (k for k in given if k.startswith("sasl.oauthbearer.")):
            raise ConfigError(f"{named(key)} needs KAFKA_SASL_MECHANISM=OAUTHBEARER")
    elif method == "oidc" and "sasl.oauthbearer.metadata.authentication.type" not in config:
        missing = [_KAFKA_PROPERTIES[k] for k in _OIDC if not config.get(k)]
        if missing:
            raise ConfigError(f"KAFKA_SASL_OAUTHBEARER_METHOD=oidc needs {' and '.join(missing)}")
    elif not (oauth_cb or config.get("sasl.oauthbearer.config")):
        raise ConfigError(
            "KAFKA_SASL_MECHANISM=OAUTHBEARER needs KAFKA_SASL_OAUTHBEARER_METHOD=oidc with the OIDC client "
            "settings (or, from Python, an oauth_cb in the client overrides)"
        )


@dataclass(frozen=True, slots=True)
class Registry(Settings):
    """The Confluent-compatible Schema Registry, for writing and reading the Confluent framing."""

    PREFIX: ClassVar[str] = "SCHEMA_REGISTRY_"
    README_TABLE: ClassVar[str] = "registry"
    url: str | None = setting(
        None, "Confluent Schema Registry URL (KAFKA_FRAMING=confluent; to read Confluent-framed topics)"
    )
    timeout_seconds: float = setting(
        60.0, "at start, wait this long for an unreachable registry", non_negative_float
    )
    basic_auth_user_info: str | None = setting(
        None, "user:password for HTTP basic auth (Confluent Cloud: API key:secret)", secret=True, cli=False
    )
    basic_auth_user_info_file: str | None = setting(
        None, "file holding SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO (a Docker secret)"
    )
    ca_location: str | None = setting(
        None, "CA certificates (PEM file) that signed the registry's HTTPS certificate (unset: the system's)"
    )
    _user_info: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        variable = "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"
        user_info = _secret(self.basic_auth_user_info, self.basic_auth_user_info_file, variable)
        if user_info is not None and ":" not in user_info:
            raise ConfigError(f"{variable} must be user:password")
        for name, value in ((variable, user_info), ("SCHEMA_REGISTRY_CA_LOCATION", self.ca_location)):
            if value and not self.url:
                raise ConfigError(f"{name} is set but SCHEMA_REGISTRY_URL is not")
        if user_info and urlsplit(self.url or "").username is not None:
            raise ConfigError(
                f"SCHEMA_REGISTRY_URL carries user:password and {variable} is set: give them once"
            )
        _existing(self.ca_location, "SCHEMA_REGISTRY_CA_LOCATION")
        object.__setattr__(self, "_user_info", user_info)

    def client_config(self) -> dict[str, Any]:
        """confluent-kafka's ``SchemaRegistryClient`` configuration (secrets included: never log it)."""
        config: dict[str, Any] = {"url": self.url}
        if self._user_info:
            config["basic.auth.user.info"] = self._user_info
        if self.ca_location:
            config["ssl.ca.location"] = self.ca_location
        return config


@dataclass(frozen=True, slots=True)
class TopicLayout(Settings):
    """Partitions and replication of the topics a command creates at start."""

    PREFIX: ClassVar[str] = "KAFKA_"
    topic_partitions: int = setting(6, "partitions of topics created at start", positive_int)
    replication_factor: int = setting(1, "replication factor of topics created at start", positive_int)


@dataclass(frozen=True, slots=True)
class MarketSettings(Settings):
    """``kite-connector market-calendar`` and ``status``: when the exchanges trade."""

    market_calendar_file: str | None = setting(
        None,
        "holidays file, lines of `YYYY-MM-DD EXCHANGE[,EXCHANGE...] description` "
        "(default: the bundled connector/market/holidays.txt)",
    )


_FRAMINGS = ("single-object", "confluent")


# -- kite-connector run ------------------------------------------------------------------------------------
KITE_API = "https://api.kite.trade"
KITE_CONNECTIONS = 3  # WebSocket connections Kite allows per api_key
_KAFKA_MESSAGE_LIMIT = 1_000_000  # librdkafka's default message.max.bytes: a dead letter must fit in it


@dataclass(frozen=True, slots=True)
class RunSettings(Settings):
    """``kite-connector run`` (and the embedding API)."""

    kite_api_key: str | None = setting(None, "Kite Connect api_key")
    kite_access_token: str | None = setting(None, "access token of the day", secret=True)
    kite_access_token_file: str | None = setting(
        None, "file holding the access token, re-read when it changes"
    )
    kite_ws_url: str = setting(
        "wss://ws.kite.trade", "Kite ticker WebSocket URL (the simulator's in docker-compose)"
    )
    kite_instruments: str | None = setting(
        None, "comma-separated tokens or EXCHANGE:TRADINGSYMBOL, each optionally @ltp|@quote|@full"
    )
    kite_mode: str = setting(
        "full", "mode of instruments that do not name one", choices=("ltp", "quote", "full")
    )
    kite_instruments_file: str | None = setting(
        None, "instruments CSV (Kite's dump) for EXCHANGE:TRADINGSYMBOL names"
    )
    kite_instruments_url: str | None = setting(
        None, "download the instruments CSV from here at start (Kite: https://api.kite.trade/instruments)"
    )
    kite_watchdog_seconds: float = setting(
        10.0, "reconnect when no message (ticks or heartbeat) came for this long", non_negative_float
    )
    kite_reconnect_max_delay: float = setting(
        30.0, "cap of the reconnect backoff, seconds", non_negative_float
    )
    kite_lines: int = setting(
        1,
        "WebSockets carrying every instrument: with 2, a tick is lost only if both miss it (first arrival "
        "wins); Kite allows 3 connections per api_key in all",
        positive_int,
    )
    gap_threshold_seconds: float = setting(
        3.0,
        "no message on any line of a shard for longer than this while the market is open is published "
        "as a gap marker (0: never)",
        non_negative_float,
    )
    market: MarketSettings = group(MarketSettings)
    kafka: KafkaClient = group(KafkaClient)
    kafka_topic_ticks: str = setting("kite.ticks", "topic for ticks (key: instrument token)")
    kafka_topic_order_updates: str = setting(
        "kite.order_updates", "topic for order updates (key: instrument token)"
    )
    kafka_topic_dead_letters: str = setting(
        "kite.dead_letters", "topic for undecodable input (raw bytes kept)"
    )
    kafka_topic_gaps: str = setting(
        "kite.gaps", "topic for gap markers: times when no line received anything (key: shard)"
    )
    layout: TopicLayout = group(TopicLayout)
    kafka_compression: str = setting(
        "lz4", "producer compression", choices=("none", "gzip", "snappy", "lz4", "zstd")
    )
    kafka_linger_ms: int = setting(
        2,
        "producer linger.ms: how long a batch waits for more records (a floor under latency)",
        non_negative_int,
    )
    kafka_delivery_timeout_ms: int = setting(
        300_000, "give up on a record after this long (0: never)", non_negative_int
    )
    kafka_framing: str = setting("single-object", "Avro framing", choices=_FRAMINGS)
    registry: Registry = group(Registry)
    max_in_flight: int = setting(
        50_000, "records produced but not yet acknowledged, at most (per connection)", positive_int
    )
    low_water_mark: int = setting(
        0,
        "block policy resumes reading below this many in flight (0: half of MAX_IN_FLIGHT)",
        non_negative_int,
    )
    backpressure_policy: str = setting(
        "block", "when MAX_IN_FLIGHT is reached", choices=("block", "conflate")
    )
    tick_backlog: int = setting(
        100_000,
        "block policy: ticks that wait, in order, while MAX_IN_FLIGHT is reached; when full, reading stops",
        positive_int,
    )
    flush_timeout_seconds: float = setting(
        10.0, "on shutdown, wait this long for Kafka to acknowledge", non_negative_float
    )
    order_log_dir: str | None = setting(
        "order-log",
        "directory of the order-update write-ahead log (each update kept until Kafka acknowledges it)",
        aliases=("SPOOL_DIR",),
    )
    kite_api_url: str | None = setting(
        None,
        "Kite REST API for order reconciliation (GET /orders); unset: https://api.kite.trade when "
        "KITE_WS_URL is Kite's own, no reconciliation otherwise",
    )
    order_reconcile_interval_seconds: float = setting(
        60.0,
        "fetch Kite's order book this often (and after every reconnect) to publish missed order updates "
        "(0: only after reconnects)",
        non_negative_float,
    )
    metrics_host: str = setting("0.0.0.0", "address of /metrics and /healthz")
    metrics_port: int = setting(9100, "port of /metrics and /healthz (0: off)", non_negative_int)
    tick_timestamp_window_seconds: float = setting(
        600.0,
        "a tick's exchange time further than this from its receive time is not used as its Kafka timestamp "
        "(the receive time is; the record keeps both)",
        non_negative_float,
    )
    dead_letter_max_bytes: int = setting(
        262_144,
        "raw bytes kept in a dead letter; longer input is cut (its length and SHA-256 are kept)",
        positive_int,
    )
    connection_failure_limit: int = setting(
        5,
        "a connection failing (an unexpected error, not a disconnect) more often than this within "
        "CONNECTION_FAILURE_WINDOW_SECONDS makes `run` exit non-zero, for the restart policy to act",
        positive_int,
    )
    connection_failure_window_seconds: float = setting(
        600.0, "the window of CONNECTION_FAILURE_LIMIT, seconds", non_negative_float
    )
    ha_group: str | None = setting(
        None,
        "hot standby: instances with the same name form one set; one (elected through Kafka) produces, the "
        "others stay connected, buffer and take over when it stops (unset: off)",
    )
    ha_lease_topic: str = setting(
        "kite.ha.lease", "one-partition topic whose consumer group elects the active (created at start)"
    )
    ha_session_timeout_ms: int = setting(
        6000,
        "an active that stops heartbeating is replaced after this long (below 6000 the brokers' "
        "group.min.session.timeout.ms must be lowered)",
        positive_int,
    )
    ha_buffer_seconds: float = setting(
        30.0,
        "a standby keeps what it would have produced this long, to write at takeover what the active had not",
        non_negative_float,
    )
    ha_buffer_max_bytes: int = setting(
        268_435_456,
        "a standby's buffer holds at most this many bytes per shard; an active's uncommitted records too "
        "(reading stops there)",
        positive_int,
    )
    ha_commit_interval_ms: int = setting(
        100,
        "the active commits its transaction this often: read_committed consumers see records then",
        positive_int,
    )
    ha_instance_id: str | None = setting(
        None, "this instance's name, in the kite.instance header of what it writes (default: host-pid)"
    )
    # Only from Python (the embedding API): extra librdkafka settings for the producer.
    producer_overrides: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.kite_api_key:
            raise ConfigError("KITE_API_KEY is not set")
        check_ws_url(self.kite_ws_url)
        if not self.kite_access_token and not self.kite_access_token_file:
            raise ConfigError("set KITE_ACCESS_TOKEN or KITE_ACCESS_TOKEN_FILE (see `kite-connector login`)")
        if self.low_water_mark >= self.max_in_flight:
            raise ConfigError("LOW_WATER_MARK must be below MAX_IN_FLIGHT")
        if self.kite_lines > KITE_CONNECTIONS:
            raise ConfigError(
                f"KITE_LINES={self.kite_lines}: Kite allows {KITE_CONNECTIONS} connections per api_key"
            )
        if self.tick_timestamp_window_seconds > 3000:
            raise ConfigError(
                "TICK_TIMESTAMP_WINDOW_SECONDS must be at most 3000: brokers refuse records more than an "
                "hour ahead (message.timestamp.after.max.ms)"
            )
        _check_dead_letter_max_bytes(self.dead_letter_max_bytes)
        _check_framing(self.kafka_framing, self.registry)
        if self.ha_group is not None:
            self._check_ha()

    def _check_ha(self) -> None:
        if self.backpressure_policy != "block":
            raise ConfigError(
                "HA_GROUP needs BACKPRESSURE_POLICY=block: a standby takes over to lose nothing, and "
                "conflate drops ticks on purpose"
            )
        if self.ha_buffer_seconds <= 0:
            raise ConfigError("HA_BUFFER_SECONDS must be above 0 with HA_GROUP")
        if not self.ha_group or any(c.isspace() for c in self.ha_group):
            raise ConfigError(f"HA_GROUP={self.ha_group!r}: a name without spaces")

    @property
    def ha_instance(self) -> str:
        """HA_INSTANCE_ID, or this host's name and this process's id."""
        return self.ha_instance_id or f"{socket.gethostname()}-{os.getpid()}"

    @property
    def reconcile_url(self) -> str | None:
        """Where to fetch the order book from, or None when there is no reconciliation."""
        if self.kite_api_url:
            return self.kite_api_url
        return KITE_API if urlsplit(self.kite_ws_url).hostname == "ws.kite.trade" else None

    @property
    def order_log_path(self) -> Path | None:
        return Path(self.order_log_dir) if self.order_log_dir else None


def _check_framing(framing: str, registry: Registry) -> None:
    if framing == "confluent" and not registry.url:
        raise ConfigError("KAFKA_FRAMING=confluent needs SCHEMA_REGISTRY_URL")


def _check_dead_letter_max_bytes(limit: int) -> None:
    if limit > _KAFKA_MESSAGE_LIMIT // 2:
        raise ConfigError(
            f"DEAD_LETTER_MAX_BYTES must be at most {_KAFKA_MESSAGE_LIMIT // 2}, so a dead letter "
            "always fits in a Kafka message"
        )


# -- kite-connector candles --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CandlesSettings(Settings):
    """``kite-connector candles``."""

    kafka: KafkaClient = group(KafkaClient)
    kafka_topic_ticks: str = setting("kite.ticks", "ticks topic to read")
    kafka_topic_gaps: str = setting(
        "kite.gaps", "gap markers to flag the bars they overlap (empty: bars are not flagged)"
    )
    candles_intervals: str = setting(
        "1m", "comma-separated bar intervals dividing a day: 1m,5m,15m,1h,1d, ..."
    )
    candles_topic_prefix: str = setting(
        "kite.candles.", "bars go to <prefix><interval>, e.g. kite.candles.1m"
    )
    candles_late_topic: str = setting("kite.candles.late", "ticks that came after their bar closed")
    candles_state_topic: str = setting("kite.candles.state", "compacted topic of open-bar state (internal)")
    kafka_topic_dead_letters: str = setting(
        "kite.dead_letters", "where undecodable ticks go (raw bytes kept)"
    )
    dead_letter_max_bytes: int = setting(
        262_144,
        "raw bytes kept in a dead letter; longer input is cut (its length and SHA-256 are kept)",
        positive_int,
    )
    candles_grace_ms: int = setting(
        2000, "a bar closes when a tick this much past its end arrives", non_negative_int
    )
    candles_idle_seconds: float = setting(
        10.0,
        "a partition with no tick for this long lets its watermark follow the wall clock (0: never)",
        non_negative_float,
    )
    candles_group: str = setting("kite-candles", "consumer group shared by the instances")
    candles_instance_id: str | None = setting(
        None, "unique per instance, stable across restarts (default: host name)"
    )
    candles_exactly_once: bool = setting(
        True, "Kafka transactions (false: at-least-once, for comparison)", flag
    )
    candles_commit_interval_ms: int = setting(
        200, "how often a transaction commits (bars show up then)", positive_int
    )
    candles_from_beginning: bool = setting(
        False, "start at the earliest tick if the group has no offset", flag
    )
    candles_session_timeout_ms: int = setting(10000, "consumer group session timeout", positive_int)
    candles_transaction_timeout_ms: int = setting(
        10000, "a dead instance's open transaction aborts after", positive_int
    )
    candles_transaction_retry_seconds: float = setting(
        60.0,
        "a transactional call failing with retriable errors, or transactions aborting without one "
        "committing, for this long makes the processor exit 3",
        non_negative_float,
    )
    candles_blind_seconds: float = setting(
        30.0,
        "every tick read for this long (at least 100) undecodable is blindness: reading stops, /healthz "
        "answers 503 (0: never)",
        non_negative_float,
    )
    candles_blind_exit_seconds: float = setting(
        120.0,
        "once blind, report it (/healthz, candles_undecodable_window) for this long, then exit 3",
        non_negative_float,
    )
    layout: TopicLayout = group(TopicLayout)
    kafka_framing: str = setting("single-object", "Avro framing of bars", choices=_FRAMINGS)
    registry: Registry = group(Registry)
    candles_metrics_host: str = setting("0.0.0.0", "address of the processor's /metrics and /healthz")
    candles_metrics_port: int = setting(
        9101, "port of the processor's /metrics and /healthz (0: off)", non_negative_int
    )

    def __post_init__(self) -> None:
        _check_framing(self.kafka_framing, self.registry)
        _check_dead_letter_max_bytes(self.dead_letter_max_bytes)


# -- kite-connector consume --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ConsumeSettings(Settings):
    """``kite-connector consume``."""

    kafka: KafkaClient = group(KafkaClient)
    consume_topics: str = setting("kite.ticks,kite.order_updates,kite.dead_letters", "comma-separated topics")
    consume_group: str | None = setting(None, "consumer group id (default: a new one each run)")
    consume_from_beginning: bool = setting(
        False, "start at the earliest offset when the group has none", flag
    )
    consume_instruments: str | None = setting(None, "only these instrument tokens (comma-separated)")
    consume_max_records: int = setting(
        0, "stop after this many records (0: run until stopped)", non_negative_int
    )
    consume_view: str = setting("json", "json lines or a live terminal view", choices=("json", "live"))
    consume_idle_exit_seconds: float = setting(
        0.0, "stop when nothing arrived for this long (0: never)", non_negative_float
    )
    registry: Registry = group(Registry)

    @property
    def topics(self) -> list[str]:
        return [t.strip() for t in self.consume_topics.split(",") if t.strip()]

    @property
    def instruments(self) -> set[str]:
        return {t.strip() for t in (self.consume_instruments or "").split(",") if t.strip()}


# -- kite-connector login ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LoginSettings(Settings):
    """``kite-connector login``."""

    kite_api_key: str | None = setting(None, "Kite Connect api_key")
    kite_api_secret: str | None = setting(None, "Kite Connect api_secret", secret=True)
    kite_request_token: str | None = setting(
        None, "request_token from the login redirect (prompted for if absent)", secret=True
    )
    kite_access_token_file: str | None = setting(None, "where to write the access token (mode 0600)")
    kite_api_url: str = setting(KITE_API, "Kite REST base URL (the simulator's for tests)")
    kite_login_url: str = setting("https://kite.zerodha.com/connect/login", "Kite login page")

    def __post_init__(self) -> None:
        for name in ("kite_api_key", "kite_api_secret", "kite_access_token_file"):
            if not getattr(self, name):
                raise ConfigError(f"{name.upper()} is not set")


# -- kite-connector simulate -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SimulatorSettings(Settings):
    """``kite-connector simulate``."""

    sim_host: str = setting("127.0.0.1", "address the simulator listens on")
    sim_port: int = setting(8765, "port the simulator listens on", int)
    sim_http_port: int = setting(
        8766, "port of the simulator's login and instruments endpoints (-1: off)", int
    )
    kite_api_key: str = setting("simulator", "api_key the simulator accepts")
    kite_access_token: str = setting("simulator-token", "access_token the simulator accepts", secret=True)
    kite_api_secret: str = setting("simulator-secret", "api_secret the login endpoint checks", secret=True)
    sim_rate: float = setting(
        1.0, "ticks per second per subscribed instrument (0: as fast as possible)", non_negative_float
    )
    sim_max_rate: float = setting(0.0, "cap on ticks per second per connection (0: none)", non_negative_float)
    sim_packets_per_message: int = setting(50, "tick packets per WebSocket message", non_negative_int)
    sim_order_rate: float = setting(
        0.2, "new orders per second, each update sent on every connection (0: none)", non_negative_float
    )
    sim_jitter_ms: float = setting(
        0.0,
        "each connection delays each message by a random 0..N ms of its own, and gets each round of "
        "instruments in its own order (never out of order on one connection)",
        non_negative_float,
    )
    sim_drop_every: float = setting(
        0.0, "drop each connection after this many seconds (0: never)", non_negative_float
    )
    sim_malformed_probability: float = setting(0.0, "chance that a message is sent malformed", probability)
    sim_stall_every: float = setting(
        0.0, "stall sending every this many seconds (0: never)", non_negative_float
    )
    sim_stall_seconds: float = setting(0.0, "how long a stall lasts", non_negative_float)
    sim_fault_connections: tuple[int, ...] | None = setting(
        None,
        "connection numbers the faults (drop, stall, malformed) apply to, e.g. 1 or 1,3 (a connection's "
        "number is the lowest one no other open connection holds: a line that reconnects keeps it); "
        "unset: all",
        connection_numbers,
    )
    sim_seed: int = setting(0, "random seed: the same seed sends the same prices", int)
    sim_replay_ticks: int = setting(
        0, "benchmark feed: send this many pre-encoded ticks per connection, then idle", non_negative_int
    )
    sim_order_hide_every: int = setting(
        0,
        "leave every Nth final order update out of the socket (only GET /orders shows it; 0: none)",
        non_negative_int,
    )
    sim_sent_log: str | None = setting(
        None, "write every record sent to this file (JSON lines), flushed per message"
    )
    sim_instruments_file: str | None = setting(
        None, "instruments CSV (Kite dump format); default: the bundled one"
    )
    sim_synthetic_instruments: int = setting(
        1000, "made-up instruments added for load tests", non_negative_int
    )


# -- kite-connector market-calendar and status ---------------------------------------------------------------
COMMANDS: dict[str, type[Settings]] = {
    "run": RunSettings,
    "candles": CandlesSettings,
    "consume": ConsumeSettings,
    "login": LoginSettings,
    "simulate": SimulatorSettings,
    "market-calendar": MarketSettings,
}


# Groups with a README table of their own (their rows in the commands' tables point there).
GROUP_TABLES: dict[str, type[Settings]] = {"kafka": KafkaClient, "registry": Registry}


def readme_tables() -> dict[str, str]:
    """Marker name → the README table between ``<!-- settings:<name> -->`` and its closing marker."""
    tables = {command: markdown_table(declaration) for command, declaration in COMMANDS.items()}
    for name, declaration in GROUP_TABLES.items():
        tables[name] = _table(list(map(_row, declaration.declared())))
    return tables


def update_readme(text: str) -> str:
    """``text`` with the table between each ``<!-- settings:<name> -->`` marker pair made anew."""
    for name, table in readme_tables().items():
        start, end = f"<!-- settings:{name} -->", f"<!-- /settings:{name} -->"
        head, found, rest = text.partition(start)
        if not found:
            continue
        _, closed, tail = rest.partition(end)
        if not closed:
            raise ValueError(f"README: {start} has no {end}")
        text = f"{head}{start}\n{table}\n{end}{tail}"
    return text


if __name__ == "__main__":  # python -m connector.config README.md: rewrites the README's settings tables
    import sys

    readme = Path(sys.argv[1])
    readme.write_text(update_readme(readme.read_text()))
