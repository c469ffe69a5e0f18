"""ClickHouse tables of the control plane (policy history, audit log, ACKs, registrations).

Applied by the control-plane service on start with CREATE TABLE IF NOT EXISTS; same SQL on the
embedded engine and on a server. Times are UTC milliseconds.
"""

from __future__ import annotations

__all__ = ["ACKS", "AUDIT", "DDL", "INSTANCES", "POLICIES"]

POLICIES = "meshlens_cp_policies"
AUDIT = "meshlens_cp_audit"
ACKS = "meshlens_cp_acks"
INSTANCES = "meshlens_cp_instances"
# Inserts remembered for deduplication: far more policy writes than can race at once.
POLICY_DEDUP_WINDOW = 10_000

DDL: tuple[str, ...] = (
    # One row per (service, version), never updated: the full history. Replacing only so that a
    # retried insert of the same version cannot show up twice. The deduplication window makes the
    # insert of a (service, version) block a compare-and-set: the first writer of a version wins,
    # a second writer's insert (same dedup token) is dropped and it sees the winner on read-back.
    f"""CREATE TABLE IF NOT EXISTS {POLICIES} (
        service LowCardinality(String),
        version UInt32,
        created_at DateTime64(3, 'UTC'),
        author String,
        reason String,
        action LowCardinality(String),
        source_version UInt32,
        digest String,
        document String
    ) ENGINE = ReplacingMergeTree
    ORDER BY (service, version)
    SETTINGS non_replicated_deduplication_window = {POLICY_DEDUP_WINDOW}""",
    # Tables created before the window existed get it too (idempotent).
    f"ALTER TABLE {POLICIES} MODIFY SETTING "
    f"non_replicated_deduplication_window = {POLICY_DEDUP_WINDOW}",
    f"""CREATE TABLE IF NOT EXISTS {AUDIT} (
        ts DateTime64(3, 'UTC'),
        id String,
        actor String,
        actor_kind LowCardinality(String),
        action LowCardinality(String),
        target String,
        reason String,
        details String
    ) ENGINE = MergeTree
    ORDER BY (ts, id)""",
    f"""CREATE TABLE IF NOT EXISTS {ACKS} (
        ts DateTime64(3, 'UTC'),
        service LowCardinality(String),
        instance String,
        version UInt32,
        nonce String,
        ok UInt8,
        error String
    ) ENGINE = MergeTree
    ORDER BY (service, instance, ts)""",
    f"""CREATE TABLE IF NOT EXISTS {INSTANCES} (
        ts DateTime64(3, 'UTC'),
        event LowCardinality(String),
        namespace LowCardinality(String),
        service LowCardinality(String),
        instance String,
        address String,
        ports String,
        labels String
    ) ENGINE = MergeTree
    ORDER BY (service, instance, ts)""",
)
