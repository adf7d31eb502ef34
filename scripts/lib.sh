# Shared set-up steps, sourced by scripts/test.sh, scripts/run.sh and .ci/run.
# Each step installs or starts only what is missing and prints how long it took.

KITE_OFFICIAL_KAFKA_IMAGE="apache/kafka:4.1.1"
KITE_OFFICIAL_BASE_IMAGE="python:3.11-slim"
KITE_OFFICIAL_REGISTRY_IMAGE="apicurio/apicurio-registry-mem:2.4.2.Final"
# the versions Debian bookworm packages, which the promtool tests run with
KITE_OFFICIAL_PROMETHEUS_IMAGE="prom/prometheus:v2.42.0"
KITE_OFFICIAL_ALERTMANAGER_IMAGE="prom/alertmanager:v0.25.0"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

step() { # step NAME COMMAND... : run, then print the time it took
  local name="$1" t0=$SECONDS
  shift
  printf '==> %s\n' "$name"
  "$@"
  printf '==> %s: %d s\n' "$name" $((SECONDS - t0))
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() { # apt_install PACKAGE... : only those not installed yet
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_docker() {
  if ! command -v dockerd >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
    apt_install docker.io
  fi
  if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
    apt_install docker-compose
  fi
  docker info >/dev/null 2>&1 && return 0
  echo "starting dockerd"
  as_root sh -c 'nohup dockerd >/var/log/kite-dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && return 0; sleep 1; done
  echo "dockerd did not start; see /var/log/kite-dockerd.log" >&2
  return 1
}

# promtool (Debian's prometheus package): the tests check and unit-test the alert rules with it. Recommends
# (the node exporter) are skipped; on a systemd host the package also starts its own service, which nothing here uses.
ensure_prometheus() {
  command -v promtool >/dev/null 2>&1 && { promtool --version 2>&1 | head -n1; return 0; }
  echo "installing prometheus (promtool)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  promtool --version 2>&1 | head -n1
}

# Official images where a registry answers; otherwise images built here from Debian + Maven Central.
ensure_images() {
  if [ -n "${KITE_KAFKA_IMAGE:-}" ] && [ -n "${KITE_BASE_IMAGE:-}" ]; then
    echo "using KITE_KAFKA_IMAGE=$KITE_KAFKA_IMAGE KITE_BASE_IMAGE=$KITE_BASE_IMAGE"
  elif docker image inspect "$KITE_OFFICIAL_KAFKA_IMAGE" >/dev/null 2>&1 \
    || timeout 300 docker pull -q "$KITE_OFFICIAL_KAFKA_IMAGE" >/dev/null 2>&1; then
    timeout 300 docker pull -q "$KITE_OFFICIAL_BASE_IMAGE" >/dev/null 2>&1 || true
    export KITE_KAFKA_IMAGE="$KITE_OFFICIAL_KAFKA_IMAGE" KITE_BASE_IMAGE="$KITE_OFFICIAL_BASE_IMAGE"
  else
    echo "no container registry answers: building images from package registries"
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    command -v mvn >/dev/null 2>&1 || apt_install maven openjdk-17-jdk-headless
    export KITE_KAFKA_IMAGE="kite-kafka/kafka:4.1.1" KITE_BASE_IMAGE="kite-kafka/python-base:bookworm"
    export KITE_REGISTRY_IMAGE="${KITE_REGISTRY_IMAGE:-kite-kafka/apicurio-registry:2.4.2}"
    bash "$repo_root/docker/build-local-images.sh" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | grep -v -i -E 'deprecated|buildkit|environment-variable|^\s*$'
  fi
  ensure_registry_image
  ensure_monitoring_images
}

# The Schema Registry image (compose and the tests): KITE_REGISTRY_IMAGE, else the official one where a
# registry answers, else one built here from Maven Central (cached; rebuilt only when its recipe changes).
ensure_registry_image() {
  local ours="kite-kafka/apicurio-registry:2.4.2"
  if [ -z "${KITE_REGISTRY_IMAGE:-}" ]; then
    if docker image inspect "$KITE_OFFICIAL_REGISTRY_IMAGE" >/dev/null 2>&1 \
      || timeout 300 docker pull -q "$KITE_OFFICIAL_REGISTRY_IMAGE" >/dev/null 2>&1; then
      export KITE_REGISTRY_IMAGE="$KITE_OFFICIAL_REGISTRY_IMAGE"
      return 0
    fi
    export KITE_REGISTRY_IMAGE="$ours"
  fi
  if [ "$KITE_REGISTRY_IMAGE" != "$ours" ]; then
    echo "using KITE_REGISTRY_IMAGE=$KITE_REGISTRY_IMAGE"
    return 0
  fi
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
  command -v mvn >/dev/null 2>&1 || apt_install maven openjdk-17-jdk-headless
  bash "$repo_root/docker/build-local-images.sh" registry 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | grep -v -i -E 'deprecated|buildkit|environment-variable|^\s*$'
}

# The project's own Kafka image (SCRAM users at format time, kite-certs.sh), which the secured stack and its
# tests need. Where KITE_KAFKA_IMAGE is the official image (or unset), ours is built as kite-kafka/kafka:4.1.1
# (from Debian and Maven Central); own_kafka_image names the one to use.
own_kafka_image() {
  case "${KITE_KAFKA_IMAGE:-}" in
    "" | "$KITE_OFFICIAL_KAFKA_IMAGE") echo "kite-kafka/kafka:4.1.1" ;;
    *) echo "$KITE_KAFKA_IMAGE" ;;
  esac
}

ensure_own_kafka_image() {
  local image
  image="$(own_kafka_image)"
  case "$image" in
    kite-kafka/*) ;;
    *) echo "using $image (it must be a build of docker/kafka)"; return 0 ;;
  esac
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
  command -v mvn >/dev/null 2>&1 || apt_install maven openjdk-17-jdk-headless
  KITE_KAFKA_IMAGE="$image" bash "$repo_root/docker/build-local-images.sh" kafka 2>&1 \
    | sed 's/\x1b\[[0-9;]*m//g' | grep -v -i -E 'deprecated|buildkit|environment-variable|^\s*$'
}

# Prometheus and Alertmanager (compose profile `monitoring`, and its test): KITE_PROMETHEUS_IMAGE and
# KITE_ALERTMANAGER_IMAGE, else the official images where a registry answers, else Debian's packages in
# images built here.
ensure_monitoring_images() {
  local prometheus="kite-kafka/prometheus:2.42.0" alertmanager="kite-kafka/alertmanager:0.25.0"
  if [ -z "${KITE_PROMETHEUS_IMAGE:-}" ]; then
    if docker image inspect "$KITE_OFFICIAL_PROMETHEUS_IMAGE" >/dev/null 2>&1 \
      || timeout 300 docker pull -q "$KITE_OFFICIAL_PROMETHEUS_IMAGE" >/dev/null 2>&1; then
      timeout 300 docker pull -q "$KITE_OFFICIAL_ALERTMANAGER_IMAGE" >/dev/null 2>&1 || true
      export KITE_PROMETHEUS_IMAGE="$KITE_OFFICIAL_PROMETHEUS_IMAGE"
      export KITE_ALERTMANAGER_IMAGE="${KITE_ALERTMANAGER_IMAGE:-$KITE_OFFICIAL_ALERTMANAGER_IMAGE}"
      return 0
    fi
    export KITE_PROMETHEUS_IMAGE="$prometheus"
  fi
  export KITE_ALERTMANAGER_IMAGE="${KITE_ALERTMANAGER_IMAGE:-$alertmanager}"
  if [ "$KITE_PROMETHEUS_IMAGE" != "$prometheus" ] && [ "$KITE_ALERTMANAGER_IMAGE" != "$alertmanager" ]; then
    echo "using KITE_PROMETHEUS_IMAGE=$KITE_PROMETHEUS_IMAGE KITE_ALERTMANAGER_IMAGE=$KITE_ALERTMANAGER_IMAGE"
    return 0
  fi
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
  bash "$repo_root/docker/build-local-images.sh" monitoring 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | grep -v -i -E 'deprecated|buildkit|environment-variable|^\s*$'
}

# A virtual environment with the project and its test extras; FRESH_VENV=1 makes it anew.
ensure_venv() {
  local venv="${KITE_VENV:-$repo_root/.venv}"
  if [ "${FRESH_VENV:-0}" = 1 ]; then rm -rf "$venv"; fi
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || { apt_install python3-venv && python3 -m venv "$venv"; }
  fi
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install -q -e "$repo_root[test]"
  export PATH="$venv/bin:$PATH"
}
