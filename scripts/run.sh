#!/usr/bin/env bash
# The run command: Kafka + Schema Registry + simulator + connector + example consumer with docker compose.
# Installs a Docker engine if missing and, where no container registry answers, builds the Kafka, registry
# and Python base images locally. Extra arguments go to `compose up` (e.g. -d to run in the background).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo_root"
step "docker engine" ensure_docker
step "images" ensure_images
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
DOCKER_BUILDKIT=0 "${compose[@]}" build connector
exec "${compose[@]}" up "$@"
