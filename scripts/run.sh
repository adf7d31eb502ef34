#!/usr/bin/env bash
# The run command: Kafka + Schema Registry + simulator + connector + example consumer with docker compose.
# Installs a Docker engine if missing and, where no container registry answers, builds the Kafka, registry
# and Python base images locally. Extra arguments go to `compose up` (e.g. -d to run in the background).
# `--secure` first: the secured stack of docker-compose.secure.yml (SASL_SSL, ACLs, an authenticating
# registry proxy), which needs the project's own Kafka image.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo_root"
files=() services=(connector)
if [ "${1:-}" = --secure ]; then
  shift
  files=(-f docker-compose.secure.yml) services=(connector registry-proxy)
fi
step "docker engine" ensure_docker
step "images" ensure_images
if [ ${#files[@]} -gt 0 ]; then
  step "the project's Kafka image" ensure_own_kafka_image
  KITE_KAFKA_IMAGE="$(own_kafka_image)" && export KITE_KAFKA_IMAGE
fi
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
DOCKER_BUILDKIT=0 "${compose[@]}" "${files[@]}" build "${services[@]}"
exec "${compose[@]}" "${files[@]}" up "$@"
