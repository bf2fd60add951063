//! Kubeconfigs: for a fleet, one cluster, one user and one context per simulated cluster,
//! all three named after it. A cluster's user holds its bearer token, or a dummy token when
//! the cluster requires none (so clients send the same header either way). Files are
//! written atomically, for readers watching them change.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::cluster::Cluster;

/// The token written for a cluster that accepts any.
const ANY_TOKEN: &str = "kube-sim";

/// A kubeconfig for `clusters`, whose current context is the first.
pub fn build(clusters: &[Arc<Cluster>]) -> Value {
    let entries: Vec<Value> = clusters
        .iter()
        .map(|c| json!({"name": c.name, "cluster": {"server": c.server_url()}}))
        .collect();
    let users: Vec<Value> = clusters
        .iter()
        .map(|c| {
            let token = c.credentials.token();
            json!({"name": c.name, "user": {"token": token.as_deref().unwrap_or(ANY_TOKEN)}})
        })
        .collect();
    let contexts: Vec<Value> = clusters
        .iter()
        .map(|c| json!({"name": c.name, "context": {"cluster": c.name, "user": c.name, "namespace": "default"}}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": entries,
        "contexts": contexts,
        "current-context": clusters.first().map(|c| c.name.clone()).unwrap_or_default(),
        "users": users,
    })
}

/// YAML rendering (JSON is valid YAML too, but people read these files).
pub fn to_yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|_| v.to_string())
}

/// `<dir>/<cluster>.yaml`.
pub fn file_for(dir: &Path, cluster: &str) -> PathBuf {
    dir.join(format!("{cluster}.yaml"))
}

/// Writes `contents` to a new temporary file next to `path` (a dot file, so globs for
/// `*.yaml` skip it), then renames it over `path`: a reader sees the old file or the new
/// one, never a part. Owner-only (0600), as it holds tokens. Not synced to disk: this is
/// for readers, not for surviving a crash.
pub fn write_atomic(path: &Path, contents: &str) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{:016x}",
        name.to_string_lossy(),
        rand::random::<u64>()
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}
