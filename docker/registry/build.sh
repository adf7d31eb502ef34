#!/usr/bin/env bash
# Maven half of the registry image: $1 = an empty output directory, filled with lib/ and registry-runner.jar.
# First installs the project's own build step for Apicurio's config-index extension (Maven Central lacks
# it) into the local Maven repository, then has Quarkus re-augment Apicurio's app jar.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$1"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$here/config-index-deployment" "$here/app" "$work/"
# shellcheck disable=SC2086
mvn -q -B -Dstyle.color=never ${MAVEN_ARGS:-} -f "$work/config-index-deployment/pom.xml" install
# shellcheck disable=SC2086
mvn -q -B -Dstyle.color=never ${MAVEN_ARGS:-} -f "$work/app/pom.xml" package
mv "$work/app/target/lib" "$out/lib"
mv "$work/app/target/schema-registry-1-runner.jar" "$out/registry-runner.jar"
