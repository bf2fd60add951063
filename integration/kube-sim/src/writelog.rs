//! The write log: one record per mutating request, including failed, dry-run and faulted
//! ones, so tests can count the effects each operation had on a cluster.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What kind of write a request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteVerb {
    Create,
    Update,
    Patch,
    Apply,
    Delete,
    DeleteCollection,
    Scale,
    Status,
}

/// One mutating request as the cluster saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteRecord {
    /// Position in this cluster's log, from 1.
    pub seq: u64,
    /// RFC 3339 time the request was handled, to the nanosecond.
    pub time: String,
    pub cluster: String,
    pub verb: WriteVerb,
    /// The patch flavour for `patch` (`json`, `merge`, `strategic`).
    pub patch_type: Option<String>,
    pub api_version: String,
    pub kind: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub field_manager: Option<String>,
    pub user_agent: Option<String>,
    /// `metadata.labels` of the request body as the client sent it.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations` of the request body as the client sent it.
    pub annotations: BTreeMap<String, String>,
    /// Whether the stored object changed (false for no-ops, failures and dry runs).
    pub changed: bool,
    /// The object's resourceVersion after the request, when there is one.
    pub resource_version: Option<String>,
    /// HTTP status code answered; 0 when the connection was reset instead.
    pub code: u16,
    pub dry_run: bool,
    /// The injected fault, if any: `status_503`, `reset_before_write`, `reset_after_commit`, `unavailable`.
    pub fault: Option<String>,
}

/// Reads `metadata.labels`/`annotations` of a request body as string maps.
pub fn string_map(body: Option<&Value>, field: &str) -> BTreeMap<String, String> {
    body.and_then(|b| b.get("metadata"))
        .and_then(|m| m.get(field))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, Default)]
pub struct WriteLog {
    next: u64,
    records: Vec<WriteRecord>,
}

impl WriteLog {
    pub fn push(&mut self, mut r: WriteRecord) {
        self.next += 1;
        r.seq = self.next;
        self.records.push(r);
    }

    pub fn records(&self) -> Vec<WriteRecord> {
        self.records.clone()
    }

    pub fn clear(&mut self) {
        self.records.clear();
    }
}
