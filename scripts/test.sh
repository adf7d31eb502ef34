#!/usr/bin/env bash
# The test command: sets up what is missing (Docker engine, images, promtool, virtualenv), then runs the unit and
# integration tests. Extra arguments go to pytest (e.g. `-m "not integration"` for the fast ones).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo_root"
step "docker engine" ensure_docker
step "images" ensure_images
step "the project's Kafka image (secured broker tests)" ensure_own_kafka_image
step "promtool" ensure_prometheus
step "virtualenv" ensure_venv
step "lint (ruff, mypy --strict)" sh -c 'ruff check . && ruff format --check . && mypy'
step "tests" python -m pytest "$@"
