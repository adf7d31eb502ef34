#!/bin/bash
# Same role as the script of that name in the official distribution: run a main class on the broker's classpath.
exec java ${KAFKA_TOOL_OPTS:--Xmx256m} -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties -cp '/opt/kafka/libs/*' "$@"
