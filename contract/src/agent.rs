//! What an agent pool may do at the hub: the NATS permissions of the user its leaf node
//! connects as (`docs/agents.md`).
//!
//! The hub enforces them on the leaf connection itself, so they hold whatever the private
//! cluster's own NATS server lets its clients do: an agent (or anything else in that
//! cluster) can consume only its own pool's operations, write only its own cluster's
//! registry entry, heartbeats, observations, leases, inventory and events, and receive
//! only replies addressed to its own inbox prefix. A subject it may not publish to has no
//! responders as far as the leaf can tell; a subject it may not receive never crosses.
//!
//! What it still shares with every pool: the status records and the per-object fences,
//! keyed by hashes that do not name a cluster, so they are readable and writable by key;
//! and the progress of fleet rollouts, readable by key, with a step it may publish for any
//! rollout (a step only makes the stepper look again).

use crate::cluster::{ClusterName, PoolName, SUBJECT_PREFIX};
use crate::inventory::{EVENTS_PREFIX, EVENTS_STREAM, INVENTORY_BUCKET};
use crate::jetstream::{
    DEAD_LETTER_STREAM, OBJECTS_BUCKET, OPERATIONS_BUCKET, ROLLOUTS_BUCKET, STEPS_STREAM, STREAM,
};
use crate::registry::{
    CLUSTERS_BUCKET, HEALTH_BUCKET, LEASES_BUCKET, MEMBERS_BUCKET, POOLS_BUCKET,
};

/// The inbox prefix an agent of `pool` uses (`nats.inbox_prefix`), so that replies to it,
/// and only those, may cross to its leaf node.
pub fn inbox_prefix(pool: &PoolName) -> String {
    format!("_INBOX_{pool}")
}

/// Subjects a NATS user may publish to and subscribe to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// The permissions of agent pool `pool`, serving `cluster`, reaching the hub's JetStream
/// through domain `domain` (`nats.jetstream.domain`; `None` when it connects to the hub's
/// servers directly).
pub fn permissions(pool: &PoolName, cluster: &ClusterName, domain: Option<&str>) -> Permissions {
    let api = match domain {
        Some(d) => format!("$JS.{d}.API"),
        None => "$JS.API".to_owned(),
    };
    // KV writes go through the API prefix when there is a domain ("$JS.hub.API.$KV.…").
    let kv = |bucket: &str, key: &str| match domain {
        Some(_) => format!("{api}.$KV.{bucket}.{key}"),
        None => format!("$KV.{bucket}.{key}"),
    };
    let get = |bucket: &str, key: &str| format!("{api}.DIRECT.GET.KV_{bucket}.$KV.{bucket}.{key}");
    let mut publish = Vec::new();
    // Opening the streams and buckets (their info), never creating or changing one.
    for stream in [STREAM, DEAD_LETTER_STREAM, EVENTS_STREAM, STEPS_STREAM] {
        publish.push(format!("{api}.STREAM.INFO.{stream}"));
    }
    let buckets = [
        OPERATIONS_BUCKET,
        OBJECTS_BUCKET,
        CLUSTERS_BUCKET,
        POOLS_BUCKET,
        MEMBERS_BUCKET,
        HEALTH_BUCKET,
        LEASES_BUCKET,
        INVENTORY_BUCKET,
        ROLLOUTS_BUCKET,
    ];
    for bucket in buckets {
        publish.push(format!("{api}.STREAM.INFO.KV_{bucket}"));
    }
    // Its own pool's consumer: created with its own filter only, read, acknowledged.
    publish.push(format!("{api}.CONSUMER.INFO.{STREAM}.{pool}"));
    publish.push(format!(
        "{api}.CONSUMER.CREATE.{STREAM}.{pool}.{}",
        pool.filter()
    ));
    publish.push(format!("{api}.CONSUMER.MSG.NEXT.{STREAM}.{pool}"));
    publish.push(format!("$JS.ACK.{STREAM}.{pool}.>"));
    // Following the registry and the watch leases, and reading its cluster's inventory
    // back: ordered consumers on those buckets (reading, not writing them), and their
    // flow control.
    for bucket in [
        CLUSTERS_BUCKET,
        POOLS_BUCKET,
        MEMBERS_BUCKET,
        LEASES_BUCKET,
        INVENTORY_BUCKET,
    ] {
        publish.push(format!("{api}.CONSUMER.CREATE.KV_{bucket}"));
    }
    publish.push("$JS.FC.>".to_owned());
    // Operation state, keyed by operation and object hashes.
    for bucket in [OPERATIONS_BUCKET, OBJECTS_BUCKET] {
        publish.push(get(bucket, "*"));
        publish.push(kv(bucket, "*"));
    }
    // Its own cluster's entries, and its own pool's.
    for (bucket, key) in [
        (CLUSTERS_BUCKET, cluster.to_string()),
        (HEALTH_BUCKET, cluster.to_string()),
        (LEASES_BUCKET, cluster.to_string()),
        (INVENTORY_BUCKET, cluster.to_string()),
        (INVENTORY_BUCKET, format!("{cluster}.>")),
        (POOLS_BUCKET, pool.to_string()),
        (MEMBERS_BUCKET, format!("{pool}.*")),
    ] {
        publish.push(get(bucket, &key));
        publish.push(kv(bucket, &key));
    }
    // Its cluster's events and dead letters, and forwarding its cluster's operations to
    // the pool the registry names (after a move).
    publish.push(format!("{EVENTS_PREFIX}.{cluster}.>"));
    publish.push(format!("{}.{cluster}.*", crate::deadletter::SUBJECT_PREFIX));
    publish.push(format!("{SUBJECT_PREFIX}.*.{cluster}"));
    // Fleet rollouts: reading a rollout's progress (never its record, which holds the
    // template), and telling it an operation is over (the stepper reads how from the
    // operation's record, not from the message).
    publish.push(get(ROLLOUTS_BUCKET, "state.*"));
    publish.push("longshore.steps.*".to_owned());
    Permissions {
        publish,
        subscribe: vec![format!("{}.>", inbox_prefix(pool))],
    }
}

impl Permissions {
    /// As a `permissions` block of a nats-server configuration (every subject quoted:
    /// unquoted, `$JS…` would read as a variable).
    pub fn nats_conf(&self, indent: &str) -> String {
        let list = |subjects: &[String]| {
            subjects
                .iter()
                .map(|s| format!("{indent}      \"{s}\""))
                .collect::<Vec<_>>()
                .join(",\n")
        };
        format!(
            "{indent}permissions: {{\n{indent}  publish: {{ allow: [\n{}\n{indent}  ] }}\n{indent}  subscribe: {{ allow: [\n{}\n{indent}  ] }}\n{indent}}}",
            list(&self.publish),
            list(&self.subscribe)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> (PoolName, ClusterName) {
        (
            PoolName::new("agent-edge-1").unwrap(),
            ClusterName::new("edge-1").unwrap(),
        )
    }

    #[test]
    fn an_agent_consumes_and_writes_only_what_is_its_own() {
        let (pool, cluster) = names();
        let p = permissions(&pool, &cluster, Some("hub"));
        let has = |s: &str| p.publish.iter().any(|x| x == s);
        assert!(has(
            "$JS.hub.API.CONSUMER.MSG.NEXT.LONGSHORE_OPS.agent-edge-1"
        ));
        assert!(has(
            "$JS.hub.API.CONSUMER.CREATE.LONGSHORE_OPS.agent-edge-1.longshore.ops.agent-edge-1.>"
        ));
        assert!(has("$JS.hub.API.$KV.LONGSHORE_CLUSTERS.edge-1"));
        assert!(has("$JS.hub.API.$KV.LONGSHORE_CLUSTER_HEALTH.edge-1"));
        // Nothing that names another pool's consumer or another cluster's key, and no
        // wildcard over a cluster or pool position.
        for s in &p.publish {
            assert!(!s.contains("workers"), "{s}");
            assert!(
                !s.contains("LONGSHORE_CLUSTERS.*") && !s.contains("LONGSHORE_CLUSTERS.>"),
                "{s}"
            );
            assert!(
                !s.contains(".STREAM.CREATE") && !s.contains(".DELETE"),
                "{s}"
            );
        }
        assert_eq!(p.subscribe, ["_INBOX_agent-edge-1.>"]);
    }

    #[test]
    fn without_a_domain_kv_writes_are_plain_subjects() {
        let (pool, cluster) = names();
        let p = permissions(&pool, &cluster, None);
        assert!(
            p.publish
                .iter()
                .any(|s| s == "$KV.LONGSHORE_CLUSTERS.edge-1")
        );
        assert!(p.publish.iter().all(|s| !s.contains("$JS.hub")));
    }

    #[test]
    fn the_conf_block_quotes_every_subject() {
        let (pool, cluster) = names();
        let conf = permissions(&pool, &cluster, Some("hub")).nats_conf("");
        assert!(conf.starts_with("permissions: {"));
        assert!(conf.contains("\"$JS.hub.API.$KV.LONGSHORE_CLUSTERS.edge-1\""));
        assert!(!conf.contains(" $JS"));
    }
}
