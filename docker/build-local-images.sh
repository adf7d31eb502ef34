#!/usr/bin/env bash
# Build, from package registries only (Debian + Maven Central), the images that the tests and
# docker-compose need, for machines that cannot pull from a container registry.
#
#   KITE_BASE_IMAGE     Debian base with python3/venv/pip (FROM of the project's Dockerfile)
#   KITE_KAFKA_IMAGE    Apache Kafka (KRaft) honouring the apache/kafka KAFKA_* environment convention
#   KITE_REGISTRY_IMAGE Apicurio Registry 2.4.2 (in-memory), the stand-in for apicurio/apicurio-registry-mem
#   KITE_REGISTRY_PROXY_IMAGE
#                       Debian's nginx on KITE_BASE_IMAGE: TLS and basic auth in front of the registry
#                       (docker-compose.secure.yml)
#   KITE_PROMETHEUS_IMAGE, KITE_ALERTMANAGER_IMAGE
#                       Debian's Prometheus 2.42 and Alertmanager 0.25, stand-ins for prom/prometheus and
#                       prom/alertmanager (the compose profile `monitoring`)
#
# `build-local-images.sh registry` builds the registry image only, `... kafka` the Kafka image only,
# `... registry-proxy` the proxy only (from an existing KITE_BASE_IMAGE), `... monitoring` the Prometheus
# and Alertmanager images only.
# Idempotent: an image that already exists is left alone (FORCE=1 rebuilds; the Kafka, registry, proxy,
# Prometheus and Alertmanager images are also rebuilt when their recipe under docker/ changes).
# Behind an air gap, point DEBIAN_MIRROR at an internal Debian mirror and MAVEN_ARGS at a
# settings.xml that names an internal Maven mirror (e.g. MAVEN_ARGS="-s /path/settings.xml").
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KITE_BASE_IMAGE="${KITE_BASE_IMAGE:-kite-kafka/python-base:bookworm}"
KITE_KAFKA_IMAGE="${KITE_KAFKA_IMAGE:-kite-kafka/kafka:4.1.1}"
KITE_REGISTRY_IMAGE="${KITE_REGISTRY_IMAGE:-kite-kafka/apicurio-registry:2.4.2}"
KITE_REGISTRY_PROXY_IMAGE="${KITE_REGISTRY_PROXY_IMAGE:-kite-kafka/registry-proxy:bookworm}"
KITE_PROMETHEUS_IMAGE="${KITE_PROMETHEUS_IMAGE:-kite-kafka/prometheus:2.42.0}"
KITE_ALERTMANAGER_IMAGE="${KITE_ALERTMANAGER_IMAGE:-kite-kafka/alertmanager:0.25.0}"
KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
LOG4J_VERSION="${LOG4J_VERSION:-2.24.3}"
SUITE="${DEBIAN_SUITE:-bookworm}"
CACHE="${KITE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kite-kafka-images}"
export DOCKER_BUILDKIT=0

say() { printf '[build-local-images] %s\n' "$*"; }

image_exists() { [ "${FORCE:-0}" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }

debian_mirror() {
  # The machine's own apt source, so no host name is written into the repo.
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(grep -h -m1 -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 | awk '{print $2}')
  [ -n "$uri" ] || uri=$(grep -h -m1 -E '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}')
  [ -n "$uri" ] || { echo "no Debian mirror found: set DEBIAN_MIRROR" >&2; exit 1; }
  echo "$uri"
}

# $1 image name, $2 extra packages (comma separated)
debootstrap_image() {
  local name="$1" include="$2" root
  root="$(mktemp -d)"
  say "debootstrap $SUITE ($include) -> $name"
  debootstrap --variant=minbase --include="$include" "$SUITE" "$root" "$(debian_mirror)" >"$root.log" 2>&1 \
    || { tail -n 30 "$root.log" >&2; exit 1; }
  rm -f "$root.log"
  # The host's trust store, so pip/apt inside builds work behind a TLS-intercepting proxy too.
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import \
    -c 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["/bin/bash"]' - "$name" >/dev/null
  rm -rf "$root"
}

build_python_base() {
  if image_exists "$KITE_BASE_IMAGE"; then say "exists: $KITE_BASE_IMAGE"; return; fi
  local t0=$SECONDS
  debootstrap_image "$KITE_BASE_IMAGE" "python3,python3-venv,python3-pip,ca-certificates"
  say "built $KITE_BASE_IMAGE in $((SECONDS - t0)) s"
}

kafka_jars() {
  local libs="$CACHE/kafka-$KAFKA_VERSION/libs"
  if [ -d "$libs" ] && [ -n "$(ls -A "$libs")" ]; then echo "$libs"; return; fi
  local work
  work="$(mktemp -d)"
  sed -e "s/@KAFKA_VERSION@/$KAFKA_VERSION/g" -e "s/@LOG4J_VERSION@/$LOG4J_VERSION/g" \
    "$here/kafka/pom.xml.in" >"$work/pom.xml"
  say "resolving Apache Kafka $KAFKA_VERSION from Maven Central" >&2
  # shellcheck disable=SC2086
  mvn -q -B -Dstyle.color=never ${MAVEN_ARGS:-} -f "$work/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$work/libs" -DincludeScope=runtime >&2
  mkdir -p "$(dirname "$libs")"
  mv "$work/libs" "$libs"
  rm -rf "$work"
  echo "$libs"
}

# The Debian JRE base shared by the Kafka and registry images (built once per run, even with FORCE=1).
JRE_IMAGE="kite-kafka/jre-base:$SUITE"
ensure_jre() {
  if [ -z "${jre_ready:-}" ] && ! image_exists "$JRE_IMAGE"; then
    debootstrap_image "$JRE_IMAGE" "openjdk-17-jre-headless,ca-certificates"
  fi
  jre_ready=1
}

# A digest of what goes into the Kafka image besides the jars: a changed recipe rebuilds the image.
kafka_recipe() { cat "$here"/kafka/Dockerfile "$here"/kafka/entrypoint.sh "$here"/kafka/log4j2.properties "$here"/kafka/bin/* | sha256sum | cut -c1-16; }

build_kafka() {
  local recipe
  recipe="$(kafka_recipe)"
  if image_exists "$KITE_KAFKA_IMAGE" \
    && [ "$(docker image inspect -f '{{ index .Config.Labels "kite.recipe" }}' "$KITE_KAFKA_IMAGE" 2>/dev/null)" = "$recipe" ]; then
    say "exists: $KITE_KAFKA_IMAGE"
    return
  fi
  local t0=$SECONDS libs ctx
  ensure_jre
  libs="$(kafka_jars)"
  ctx="$(mktemp -d)"
  cp -r "$libs" "$ctx/libs"
  cp "$here/kafka/Dockerfile" "$here/kafka/entrypoint.sh" "$here/kafka/log4j2.properties" "$ctx/"
  cp -r "$here/kafka/bin" "$ctx/bin"
  docker build -q --build-arg "BASE=$JRE_IMAGE" --label "kite.recipe=$recipe" -t "$KITE_KAFKA_IMAGE" "$ctx" >/dev/null
  rm -rf "$ctx"
  say "built $KITE_KAFKA_IMAGE in $((SECONDS - t0)) s"
}

# Everything under docker/registry is recipe: the Maven half (poms, the build step's source) and the image.
registry_recipe() {
  (cd "$here/registry" && find . -type f -not -path '*/target/*' | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16
}

build_registry() {
  local recipe
  recipe="$(registry_recipe)"
  if image_exists "$KITE_REGISTRY_IMAGE" \
    && [ "$(docker image inspect -f '{{ index .Config.Labels "kite.recipe" }}' "$KITE_REGISTRY_IMAGE" 2>/dev/null)" = "$recipe" ]; then
    say "exists: $KITE_REGISTRY_IMAGE"
    return
  fi
  local t0=$SECONDS app="$CACHE/registry-$recipe" ctx
  ensure_jre
  if [ ! -f "$app/registry-runner.jar" ]; then
    say "assembling Apicurio Registry from Maven Central"
    rm -rf "$app" && mkdir -p "$app"
    bash "$here/registry/build.sh" "$app" || { rm -rf "$app"; exit 1; }
  fi
  ctx="$(mktemp -d)"
  cp -r "$app/lib" "$app/registry-runner.jar" "$here/registry/Dockerfile" "$ctx/"
  docker build -q --build-arg "BASE=$JRE_IMAGE" --label "kite.recipe=$recipe" -t "$KITE_REGISTRY_IMAGE" "$ctx" >/dev/null
  rm -rf "$ctx"
  say "built $KITE_REGISTRY_IMAGE in $((SECONDS - t0)) s"
}

# The registry proxy: Debian's nginx-light installed on the project's Debian base (apt runs in the build).
build_registry_proxy() {
  local recipe
  recipe="$(cat "$here"/registry-proxy/* | sha256sum | cut -c1-16)"
  if image_exists "$KITE_REGISTRY_PROXY_IMAGE" \
    && [ "$(docker image inspect -f '{{ index .Config.Labels "kite.recipe" }}' "$KITE_REGISTRY_PROXY_IMAGE" 2>/dev/null)" = "$recipe" ]; then
    say "exists: $KITE_REGISTRY_PROXY_IMAGE"
    return
  fi
  local t0=$SECONDS
  docker build -q --build-arg "BASE=$KITE_BASE_IMAGE" --label "kite.recipe=$recipe" \
    -t "$KITE_REGISTRY_PROXY_IMAGE" "$here/registry-proxy" >/dev/null
  say "built $KITE_REGISTRY_PROXY_IMAGE in $((SECONDS - t0)) s"
}

# Prometheus and Alertmanager share one Debian tree with both packages; each image only adds its entrypoint.
MONITORING_BASE="kite-kafka/monitoring-base:$SUITE"
build_monitoring_image() { # $1 image name, $2 its recipe directory under docker/
  local name="$1" dir="$here/$2" recipe
  recipe="$(sha256sum "$dir/Dockerfile" | cut -c1-16)"
  if image_exists "$name" \
    && [ "$(docker image inspect -f '{{ index .Config.Labels "kite.recipe" }}' "$name" 2>/dev/null)" = "$recipe" ]; then
    say "exists: $name"
    return
  fi
  local t0=$SECONDS
  if [ -z "${monitoring_ready:-}" ] && ! image_exists "$MONITORING_BASE"; then
    debootstrap_image "$MONITORING_BASE" "prometheus,prometheus-alertmanager,ca-certificates"
  fi
  monitoring_ready=1
  docker build -q --build-arg "BASE=$MONITORING_BASE" --label "kite.recipe=$recipe" -t "$name" "$dir" >/dev/null
  say "built $name in $((SECONDS - t0)) s"
}

command -v docker >/dev/null || { echo "docker is not installed" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
if [ "${1:-}" = registry ]; then  # only the registry image (the others come from elsewhere)
  build_registry
  say "ready: KITE_REGISTRY_IMAGE=$KITE_REGISTRY_IMAGE"
  exit 0
fi
if [ "${1:-}" = kafka ]; then  # only the Kafka image (docker-compose.secure.yml needs this one)
  build_kafka
  say "ready: KITE_KAFKA_IMAGE=$KITE_KAFKA_IMAGE"
  exit 0
fi
if [ "${1:-}" = registry-proxy ]; then  # only the proxy, on an existing base image
  build_registry_proxy
  say "ready: KITE_REGISTRY_PROXY_IMAGE=$KITE_REGISTRY_PROXY_IMAGE"
  exit 0
fi
if [ "${1:-}" = monitoring ]; then  # only the Prometheus and Alertmanager images
  build_monitoring_image "$KITE_PROMETHEUS_IMAGE" prometheus
  build_monitoring_image "$KITE_ALERTMANAGER_IMAGE" alertmanager
  say "ready: KITE_PROMETHEUS_IMAGE=$KITE_PROMETHEUS_IMAGE KITE_ALERTMANAGER_IMAGE=$KITE_ALERTMANAGER_IMAGE"
  exit 0
fi
build_python_base &
base_pid=$!
build_kafka
build_registry
build_monitoring_image "$KITE_PROMETHEUS_IMAGE" prometheus
build_monitoring_image "$KITE_ALERTMANAGER_IMAGE" alertmanager
wait "$base_pid"
build_registry_proxy
say "ready: KITE_BASE_IMAGE=$KITE_BASE_IMAGE KITE_KAFKA_IMAGE=$KITE_KAFKA_IMAGE KITE_REGISTRY_IMAGE=$KITE_REGISTRY_IMAGE"
say "ready: KITE_REGISTRY_PROXY_IMAGE=$KITE_REGISTRY_PROXY_IMAGE"
say "ready: KITE_PROMETHEUS_IMAGE=$KITE_PROMETHEUS_IMAGE KITE_ALERTMANAGER_IMAGE=$KITE_ALERTMANAGER_IMAGE"
