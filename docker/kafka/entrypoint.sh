#!/bin/bash
# Follows the apache/kafka image convention: every KAFKA_* variable becomes a server property
# (KAFKA_ stripped, lower case, '_' -> '.', '__' -> '_', '___' -> '-'); CLUSTER_ID names the cluster.
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

cluster_id="${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}"
log4j="-Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties"
# Format once; a restarted container with its data volume keeps its storage.
java -Xmx256m $log4j -cp '/opt/kafka/libs/*' kafka.tools.StorageTool format \
  -t "$cluster_id" -c "$props" --ignore-formatted >/dev/null
# The heap and GC defaults of Kafka's own start scripts (kafka-server-start.sh, kafka-run-class.sh), so
# the broker pauses as briefly as the official image's does; the same variables override them.
heap="${KAFKA_HEAP_OPTS:--Xmx1G -Xms1G}"
gc="${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true}"
# shellcheck disable=SC2086
exec java $heap $gc ${KAFKA_OPTS:-} $log4j -cp '/opt/kafka/libs/*' kafka.Kafka "$props"
