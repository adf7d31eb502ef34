"""The secured stack, docker-compose.secure.yml (README: `bash scripts/run.sh --secure`): it comes up from
nothing, the connector streams over SASL_SSL as a principal with only its ACLs, the registry answers only
through its TLS + basic-auth proxy, and the consumer prints ticks. `down -v` leaves nothing behind."""

from __future__ import annotations

import os
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.sink import Cluster, KafkaAccessError
from tests.harness import (
    DEFAULT_KAFKA_IMAGE,
    DEFAULT_REGISTRY_IMAGE,
    LOCAL_KAFKA_IMAGE,
    LOCAL_REGISTRY_IMAGE,
    free_port,
    pick_image,
)
from tests.integration.helpers import compose_command, wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


class Stack:
    def __init__(self, env: dict[str, str]) -> None:
        self.compose, self.env = compose_command("docker-compose.secure.yml"), env

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.compose, *args], env=self.env, capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def secure_stack() -> Iterator[Stack]:
    chosen = os.environ.get("KITE_KAFKA_IMAGE")
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": f"kitesecure{uuid.uuid4().hex[:6]}",
        "DOCKER_BUILDKIT": "0",
        "KITE_KAFKA_IMAGE": chosen if chosen and chosen != DEFAULT_KAFKA_IMAGE else LOCAL_KAFKA_IMAGE,
        "KITE_REGISTRY_IMAGE": pick_image(
            "KITE_REGISTRY_IMAGE", DEFAULT_REGISTRY_IMAGE, LOCAL_REGISTRY_IMAGE
        ),
        "KAFKA_HOST_PORT": str(free_port()),
        "REGISTRY_HOST_PORT": str(free_port()),
        "METRICS_HOST_PORT": str(free_port()),
        "SIM_RATE": "20",
    }
    stack = Stack(env)
    build = stack.run("build", "connector", "registry-proxy")
    assert build.returncode == 0, build.stderr[-3000:]
    up = stack.run("up", "-d")
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        yield stack
    finally:
        logs = stack.run("logs", "--no-color", "--tail=10", "acls", "connector", "candles", "consumer").stdout
        print(stack.run("ps").stdout, logs[-6000:])  # shown when the test failed
        down = stack.run("down", "-v", "--remove-orphans")
        assert down.returncode == 0, down.stderr[-2000:]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5, context=ssl._create_unverified_context()) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_the_secured_stack_streams_and_the_consumer_prints_ticks(secure_stack: Stack) -> None:
    env = secure_stack.env

    def ticks_printed() -> bool:
        return '"type": "Tick"' in secure_stack.run("logs", "--no-color", "--tail=20", "consumer").stdout

    wait_until(ticks_printed, 240, "the consumer to print ticks")
    healthz = f"http://127.0.0.1:{env['METRICS_HOST_PORT']}/healthz"
    assert _status(healthz) == 200, "the connector streams, healthy"
    # the registry answers only with credentials (the proxy's own certificate is not what is tested here)
    assert _status(f"https://127.0.0.1:{env['REGISTRY_HOST_PORT']}/apis/ccompat/v7/subjects") == 401
    # Kafka's published listener takes SASL_SSL only: a plain client is told so, at once
    with pytest.raises(KafkaAccessError, match="speaks TLS, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT"):
        Cluster({"bootstrap.servers": f"127.0.0.1:{env['KAFKA_HOST_PORT']}"}).metadata(timeout=30)
    # the candle processor (transactions, its own group and state topic) runs as its own principal too:
    # its /healthz (the compose healthcheck) answers 200 once it reads its partitions
    wait_until(lambda: "(healthy)" in secure_stack.run("ps", "candles").stdout, 60, "candles to be healthy")
    # a reader with the wrong registry password stops at start, saying so
    wrong = secure_stack.run(
        "run", "--rm", "--no-deps",
        "-e", "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE=",
        "-e", "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO=kite:not-the-password",
        "consumer",
    )  # fmt: skip
    assert wrong.returncode == 2, wrong.stderr[-2000:]
    assert "refused the credentials (HTTP 401): check SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO" in wrong.stderr
