"""The least-privilege ACLs of docker-compose.secure.yml, created as the admin (run in the connector's image).

The same ACLs as README's "Connecting to your Kafka" gives as kafka-acls commands, for the topic and group
names the stack uses (the defaults). Creating an ACL that exists changes nothing, so every start runs it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._acl import AclBinding, AclOperation, AclPermissionType
from confluent_kafka.admin._resource import ResourcePatternType, ResourceType

TOPIC, GROUP, CLUSTER, TXN = (
    ResourceType.TOPIC,
    ResourceType.GROUP,
    ResourceType.BROKER,
    ResourceType.TRANSACTIONAL_ID,
)
READ, WRITE, CREATE = AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE
LITERAL, PREFIXED = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED


def allow(
    user: str, kind: ResourceType, name: str, *ops: AclOperation, pattern: ResourcePatternType = LITERAL
) -> list[AclBinding]:
    return [AclBinding(kind, name, pattern, f"User:{user}", "*", op, AclPermissionType.ALLOW) for op in ops]


def bindings(env: dict[str, str]) -> list[AclBinding]:
    ticks = env.get("KAFKA_TOPIC_TICKS", "kite.ticks")
    orders = env.get("KAFKA_TOPIC_ORDER_UPDATES", "kite.order_updates")
    letters = env.get("KAFKA_TOPIC_DEAD_LETTERS", "kite.dead_letters")
    gaps = env.get("KAFKA_TOPIC_GAPS", "kite.gaps")
    candles = env.get("CANDLES_TOPIC_PREFIX", "kite.candles.")
    group = env.get("CANDLES_GROUP", "kite-candles")
    return [
        # kite-connector run: writes (and creates) its four topics; produces idempotently
        *[
            b
            for topic in (ticks, orders, letters, gaps)
            for b in allow("connector", TOPIC, topic, WRITE, CREATE)
        ],
        *allow("connector", CLUSTER, "kafka-cluster", AclOperation.IDEMPOTENT_WRITE),
        # kite-connector candles: reads ticks and gap markers; writes bars, late ticks, its state (which it
        # reads back) and dead letters; its consumer group and its transactional ids (<group>-<instance>)
        *allow("candles", TOPIC, ticks, READ),
        *allow("candles", TOPIC, gaps, READ),
        *allow("candles", TOPIC, candles, READ, WRITE, CREATE, pattern=PREFIXED),
        *allow("candles", TOPIC, letters, WRITE, CREATE),
        *allow("candles", GROUP, group, READ, pattern=PREFIXED),
        *allow("candles", TXN, f"{group}-", WRITE, pattern=PREFIXED),
        *allow("candles", CLUSTER, "kafka-cluster", AclOperation.IDEMPOTENT_WRITE),
        # kite-connector consume: reads ticks and order updates, in groups named kite-consume-*
        *allow("consumer", TOPIC, ticks, READ),
        *allow("consumer", TOPIC, orders, READ),
        *allow("consumer", GROUP, "kite-consume-", READ, pattern=PREFIXED),
    ]


def main() -> int:
    env = dict(os.environ)
    admin = AdminClient(
        {
            "bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"],
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "admin",
            "sasl.password": Path(env["KAFKA_SASL_PASSWORD_FILE"]).read_text().strip(),
            "ssl.ca.location": env["KAFKA_SSL_CA_LOCATION"],
        }
    )
    wanted = bindings(env)
    for future in admin.create_acls(wanted).values():
        future.result(timeout=60)
    print(f"{len(wanted)} ACLs in place for User:connector, User:candles and User:consumer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
