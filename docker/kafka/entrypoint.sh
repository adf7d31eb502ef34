#!/bin/bash
# Follows the apache/kafka image convention: every KAFKA_* variable becomes a server property
# (KAFKA_ stripped, lower case, '_' -> '.', '__' -> '_', '___' -> '-'); CLUSTER_ID names the cluster.
# One addition: SCRAM_USERS="name:password-file ..." creates those SASL/SCRAM users (SCRAM-SHA-256 and
# SCRAM-SHA-512) when the storage is formatted, i.e. on the first start with an empty data directory.
# Each password is read from its file (a Docker secret), never from the environment.
set -euo pipefail

props=/opt/kafka/config/server.properties
: > "$props"
skip='^KAFKA_(HEAP_OPTS|OPTS|JVM_PERFORMANCE_OPTS|LOG4J_OPTS|TOOL_OPTS|VERSION)$'
while IFS='=' read -r name value; do
  [[ "$name" =~ ^KAFKA_ ]] || continue
  [[ "$name" =~ $skip ]] && continue
  key="${name#KAFKA_}"
  key="${key,,}"
  key="${key//___/-}"
  key="${key//__/@}"
  key="${key//_/.}"
  key="${key//@/_}"
  printf '%s=%s\n' "$key" "$value" >> "$props"
done < <(env)
grep -q '^log.dirs=' "$props" || echo "log.dirs=/var/lib/kafka/data" >> "$props"

scram=()
for entry in ${SCRAM_USERS:-}; do
  user="${entry%%:*}" file="${entry#*:}"
  [[ "$user" =~ ^[A-Za-z0-9._-]+$ && "$file" != "$entry" ]] \
    || { echo "SCRAM_USERS: '$user' is not name:password-file with a name of letters, digits, . _ -" >&2; exit 2; }
  password="$(cat "$file")" || { echo "SCRAM_USERS: cannot read the password file of $user" >&2; exit 2; }
  # The storage tool parses [name=...,password=...] itself: these characters would end the value early.
  [[ -n "$password" && ! "$password" =~ [],=\"[:space:][] ]] \
    || { echo "SCRAM_USERS: the password of $user is empty or has one of , = [ ] \" or a space" >&2; exit 2; }
  for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
    scram+=(--add-scram "$mechanism=[name=$user,password=$password]")
  done
done

cluster_id="${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}"
log4j="-Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties"
# Format once; a restarted container with its data volume keeps its storage (and its SCRAM users).
java -Xmx256m $log4j -cp '/opt/kafka/libs/*' kafka.tools.StorageTool format \
  -t "$cluster_id" -c "$props" --ignore-formatted "${scram[@]}" >/dev/null
# The heap and GC defaults of Kafka's own start scripts (kafka-server-start.sh, kafka-run-class.sh), so
# the broker pauses as briefly as the official image's does; the same variables override them.
heap="${KAFKA_HEAP_OPTS:--Xmx1G -Xms1G}"
gc="${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true}"
# shellcheck disable=SC2086
exec java $heap $gc ${KAFKA_OPTS:-} $log4j -cp '/opt/kafka/libs/*' kafka.Kafka "$props"
