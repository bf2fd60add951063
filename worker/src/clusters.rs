//! The pool's credentials, and a client per cluster built from them.
//!
//! Which clusters exist, and which credentials reference each uses, is the registry's
//! (`longshore_contract::registry`). What this worker has is credentials: the contexts of
//! the kubeconfig files in `clusters.kubeconfig_dir` (watched: [`Clusters::reload`]), of
//! `clusters.kubeconfig`, and its in-cluster identity. Nothing of a credential is logged or
//! announced but its reference (`kubeconfig:<context>`).
//!
//! A cluster's client (connection pool, TLS, its cache of discovered kinds) is built on
//! first use, rebuilt when the cluster's credentials reference or the credential behind it
//! changes (a rotated token is used from the next request on), and dropped after
//! `clusters.idle_timeout` without use, so memory stays bounded however many clusters a
//! worker has touched.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{self, ApiCapabilities, ApiResource};
use longshore_contract::registry::{ClusterEntry, Credentials as Reference};
use longshore_contract::spec::ObjectRef;
use sha2::{Digest, Sha256};

use crate::config::ClustersConfig;
use crate::error::{Error, OpError, Result, Verb};

/// A resolved kind: where its objects live and what they support.
pub type Kind = (ApiResource, ApiCapabilities);

/// One credential, and a digest of what it is (so a change is noticed without comparing
/// secrets).
struct Credential {
    source: Source,
    digest: [u8; 32],
}

/// What a credential's client configuration is built from.
enum Source {
    /// The kubeconfig of one context (the context, its cluster and its user), serialized:
    /// a few hundred bytes, where a built configuration takes kilobytes, for each of
    /// thousands of contexts. Checked when read; built into a configuration on first use.
    Kubeconfig {
        context: String,
        part: secrecy::SecretSlice<u8>,
    },
    InCluster(Box<kube::Config>),
}

impl Credential {
    async fn config(&self) -> std::result::Result<kube::Config, String> {
        match &self.source {
            Source::InCluster(config) => Ok(kube::Config::clone(config)),
            Source::Kubeconfig { context, part } => {
                use secrecy::ExposeSecret;
                let part: Kubeconfig = serde_json::from_slice(part.expose_secret())
                    .map_err(|e| format!("context {context}: {e}"))?;
                let options = KubeConfigOptions {
                    context: Some(context.clone()),
                    ..Default::default()
                };
                kube::Config::from_custom_kubeconfig(part, &options)
                    .await
                    .map_err(|e| format!("context {context}: {e}"))
            }
        }
    }
}

/// Every credential this worker has, by reference.
#[derive(Default)]
struct CredentialSet {
    by_reference: BTreeMap<String, Arc<Credential>>,
}

/// The clients of the clusters this worker has used, and the credentials they come from.
pub struct Clusters {
    config: ClustersConfig,
    credentials: RwLock<Arc<CredentialSet>>,
    /// What `kubeconfig_dir` held when last read: (file, length, modification time).
    dir_seen: Mutex<Vec<(PathBuf, u64, std::time::SystemTime)>>,
    clients: Mutex<HashMap<String, Arc<Cluster>>>,
    transports: Arc<crate::transport::Transports>,
    /// How many clusters keep a client now (at most [`KEPT_CLIENTS`]).
    kept_clients: Arc<AtomicUsize>,
    metrics: Arc<crate::metrics::Metrics>,
    request_timeout: Duration,
    started: Instant,
}

/// Clusters that keep their client between calls, at most: those in use now. Beyond it a
/// client is built per call (a kept one costs about 9 KiB, mostly its request buffer;
/// thousands of clusters touched at once would keep tens of MiB).
const KEPT_CLIENTS: usize = 256;

/// One cluster: its client and what has been discovered about it.
pub struct Cluster {
    pub name: String,
    reference: String,
    digest: [u8; 32],
    config: kube::Config,
    /// Per-cluster API metrics, recorded by the client's [`crate::api_calls`] layer.
    metrics: Arc<crate::metrics::Metrics>,
    /// The connections it shares with clusters that connect the same way.
    transports: Arc<crate::transport::Transports>,
    request_timeout: Duration,
    /// Kinds by `apiVersion`, then `kind`: looked up by the object's own strings.
    kinds: tokio::sync::RwLock<HashMap<String, HashMap<String, Kind>>>,
    client: std::sync::OnceLock<kube::Client>,
    kept_clients: Arc<AtomicUsize>,
    /// Seconds since the registry started when it was last handed out.
    last_used: AtomicU64,
}

impl Clusters {
    /// Reads every configured credential. Fails (naming the file or context) if the
    /// kubeconfig file or the in-cluster identity cannot be read: a worker that silently
    /// lacks credentials would fail its operations. A bad file in `kubeconfig_dir` is only
    /// logged: the directory changes at runtime, and one bad file must not stop the rest.
    pub async fn load(
        config: &ClustersConfig,
        request_timeout: Duration,
        metrics: &Arc<crate::metrics::Metrics>,
    ) -> Result<Self> {
        let clusters = Self {
            config: config.clone(),
            credentials: RwLock::default(),
            dir_seen: Mutex::default(),
            clients: Mutex::default(),
            transports: Arc::default(),
            kept_clients: Arc::default(),
            metrics: metrics.clone(),
            request_timeout,
            started: Instant::now(),
        };
        let set = clusters.read_all().await?;
        *clusters
            .credentials
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        Ok(clusters)
    }

    /// Reads `kubeconfig_dir` again if anything in it changed; whether the credentials
    /// changed. Clients whose credential changed or went away are dropped (rebuilt on next
    /// use), the others kept.
    pub async fn reload(&self) -> bool {
        if self.config.kubeconfig_dir.is_none() || !self.dir_changed() {
            return false;
        }
        let set = match self.read_all().await {
            Ok(set) => set,
            Err(e) => {
                tracing::warn!(error = %e, "credentials not reloaded");
                return false;
            }
        };
        let old = self.credentials();
        let changed = old.by_reference.len() != set.by_reference.len()
            || old
                .by_reference
                .iter()
                .zip(&set.by_reference)
                .any(|((ka, a), (kb, b))| ka != kb || a.digest != b.digest);
        if changed {
            tracing::info!(credentials = set.by_reference.len(), "credentials reloaded");
            *self.credentials.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
            let current = self.credentials();
            self.clients
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, c| {
                    current
                        .by_reference
                        .get(&c.reference)
                        .is_some_and(|cred| cred.digest == c.digest)
                });
        }
        changed
    }

    /// The references of every credential this worker has, sorted (what the pool
    /// announces, so registrations can be checked against it).
    pub fn references(&self) -> Vec<String> {
        self.credentials().by_reference.keys().cloned().collect()
    }

    /// The clusters the configuration names the old way (the contexts of
    /// `clusters.kubeconfig`, `clusters.in_cluster`), to register if the registry lacks
    /// them.
    pub fn seeds(&self) -> Vec<(String, Reference)> {
        let mut out: Vec<(String, Reference)> = self
            .credentials()
            .by_reference
            .keys()
            .filter_map(|r| r.strip_prefix("kubeconfig:"))
            .filter(|context| {
                self.config.kubeconfig.is_some() && self.is_configured_context(context)
            })
            .map(|context| {
                (
                    context.to_owned(),
                    Reference::Kubeconfig {
                        context: context.to_owned(),
                    },
                )
            })
            .collect();
        if let Some(name) = &self.config.in_cluster {
            out.push((name.clone(), Reference::InCluster));
        }
        out
    }

    /// The cluster of `entry`, built from its credentials reference if this worker has it,
    /// and kept (until idle) for the operations that follow.
    pub async fn get(&self, entry: &ClusterEntry) -> std::result::Result<Arc<Cluster>, OpError> {
        self.cluster(entry, true).await
    }

    /// The cluster of `entry` for one call (a probe): the one in use if there is one,
    /// else one built for it and not kept, so probing a pool's whole share of a fleet
    /// holds no memory between rounds.
    pub async fn once(&self, entry: &ClusterEntry) -> std::result::Result<Arc<Cluster>, OpError> {
        self.cluster(entry, false).await
    }

    async fn cluster(
        &self,
        entry: &ClusterEntry,
        keep: bool,
    ) -> std::result::Result<Arc<Cluster>, OpError> {
        let reference = entry.credentials.reference();
        let now = self.started.elapsed().as_secs();
        let credential = {
            let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(cluster) = clients.get(entry.name.as_str())
                && cluster.reference == reference
            {
                cluster.last_used.store(now, Ordering::Relaxed);
                return Ok(cluster.clone());
            }
            self.credentials().by_reference.get(&reference).cloned()
        };
        let Some(credential) = credential else {
            return Err(OpError::NoCredentials {
                cluster: entry.name.to_string(),
                reference,
            });
        };
        let config = credential.config().await.map_err(|e| {
            OpError::UnknownCluster(format!("{}: cannot build a client: {e}", entry.name))
        })?;
        let cluster = Arc::new(Cluster::new(
            self,
            entry.name.as_str(),
            (reference, credential.digest),
            config,
        ));
        if !keep {
            return Ok(cluster);
        }
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        // Another operation may have built it meanwhile: one is kept, and shared.
        let kept = clients
            .entry(entry.name.to_string())
            .and_modify(|c| {
                if c.reference != cluster.reference || c.digest != cluster.digest {
                    *c = cluster.clone();
                }
            })
            .or_insert(cluster);
        Ok(kept.clone())
    }

    /// Drops the clients unused for `clusters.idle_timeout`; how many are left.
    pub fn drop_idle(&self) -> usize {
        let now = self.started.elapsed().as_secs();
        let idle = self.config.idle_timeout.as_secs();
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.retain(|_, c| now.saturating_sub(c.last_used.load(Ordering::Relaxed)) < idle);
        clients.len()
    }

    fn credentials(&self) -> Arc<CredentialSet> {
        self.credentials
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn is_configured_context(&self, context: &str) -> bool {
        self.config.contexts.is_empty() || self.config.contexts.iter().any(|c| c == context)
    }

    async fn read_all(&self) -> Result<CredentialSet> {
        let mut set = CredentialSet::default();
        if let Some(dir) = &self.config.kubeconfig_dir {
            for file in self.dir_files(dir) {
                match Kubeconfig::read_from(&file) {
                    Ok(kubeconfig) => add_contexts(&mut set, &kubeconfig, None, &file).await,
                    Err(e) => {
                        tracing::warn!(file = %file.display(), error = %e, "not a kubeconfig; skipping it")
                    }
                }
            }
        }
        if let Some(path) = &self.config.kubeconfig {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| Error::Clusters(format!("{}: {e}", path.display())))?;
            for context in &self.config.contexts {
                if !file.contexts.iter().any(|c| &c.name == context) {
                    return Err(Error::Clusters(format!(
                        "context {context} is not in {}",
                        path.display()
                    )));
                }
            }
            let only = (!self.config.contexts.is_empty()).then_some(&self.config.contexts[..]);
            add_contexts(&mut set, &file, only, path).await;
        }
        if let Some(name) = &self.config.in_cluster {
            let config = kube::Config::incluster()
                .map_err(|e| Error::Clusters(format!("in-cluster config for {name}: {e}")))?;
            let digest = Sha256::digest(config.cluster_url.to_string().as_bytes()).into();
            set.by_reference.insert(
                Reference::InCluster.reference(),
                Arc::new(Credential {
                    source: Source::InCluster(Box::new(config)),
                    digest,
                }),
            );
        }
        Ok(set)
    }

    /// The kubeconfig files of `dir` (not hidden ones: a Secret volume keeps its versions
    /// in `..data` directories), sorted, and notes what they were.
    fn dir_files(&self, dir: &Path) -> Vec<PathBuf> {
        let listed = list(dir);
        *self.dir_seen.lock().unwrap_or_else(|e| e.into_inner()) = listed.clone();
        listed.into_iter().map(|(p, _, _)| p).collect()
    }

    fn dir_changed(&self) -> bool {
        let Some(dir) = &self.config.kubeconfig_dir else {
            return false;
        };
        *self.dir_seen.lock().unwrap_or_else(|e| e.into_inner()) != list(dir)
    }
}

fn list(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            // Follows symbolic links, as a Secret volume's files are.
            let meta = std::fs::metadata(e.path()).ok()?;
            let modified = meta.modified().ok()?;
            meta.is_file().then(|| (e.path(), meta.len(), modified))
        })
        .collect();
    out.sort();
    out
}

/// Adds the contexts of `file` (only those named in `only`, if given) to `set`. A context
/// that is not a DNS label, or that cannot be turned into a client configuration, is
/// skipped with a warning naming it; the first file to define a context wins.
async fn add_contexts(
    set: &mut CredentialSet,
    file: &Kubeconfig,
    only: Option<&[String]>,
    path: &Path,
) {
    for context in &file.contexts {
        let name = &context.name;
        if only.is_some_and(|only| !only.contains(name)) {
            continue;
        }
        let reference = Reference::Kubeconfig {
            context: name.clone(),
        }
        .reference();
        if set.by_reference.contains_key(&reference) {
            tracing::warn!(context = %name, file = %path.display(), "context defined twice; keeping the first");
            continue;
        }
        let part = serde_json::to_vec(&only_context(file, name)).unwrap_or_default();
        let credential = Credential {
            digest: Sha256::digest(&part).into(),
            source: Source::Kubeconfig {
                context: name.clone(),
                part: part.into(),
            },
        };
        // Checked now, so an unusable context is reported when it arrives, not when used.
        match credential.config().await {
            Ok(_) => {
                set.by_reference.insert(reference, Arc::new(credential));
            }
            Err(e) => {
                tracing::warn!(context = %name, file = %path.display(), error = %e, "unusable context; skipping it")
            }
        }
    }
}

/// The part of `file` that `context` uses: the context, its cluster and its user.
fn only_context(file: &Kubeconfig, context: &str) -> Kubeconfig {
    let named = file.contexts.iter().find(|c| c.name == context).cloned();
    let (cluster, user) = named
        .as_ref()
        .and_then(|c| c.context.as_ref())
        .map(|c| (Some(c.cluster.clone()), c.user.clone()))
        .unwrap_or_default();
    Kubeconfig {
        preferences: file.preferences.clone(),
        clusters: file
            .clusters
            .iter()
            .filter(|c| Some(&c.name) == cluster.as_ref())
            .cloned()
            .collect(),
        auth_infos: file
            .auth_infos
            .iter()
            .filter(|a| Some(&a.name) == user.as_ref())
            .cloned()
            .collect(),
        contexts: named.into_iter().collect(),
        current_context: Some(context.to_owned()),
        ..Default::default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.client.get().is_some() {
            self.kept_clients.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Cluster {
    /// `credential`: its reference and digest.
    fn new(
        clusters: &Clusters,
        name: &str,
        (reference, digest): (String, [u8; 32]),
        mut config: kube::Config,
    ) -> Self {
        let request_timeout = clusters.request_timeout;
        // Retries belong to the work queue (see `policy`): kube's own retry layer would hold
        // a worker slot for minutes on a throttled cluster, invisible to `max_deliver`.
        config.default_retry = false;
        config.connect_timeout = Some(request_timeout);
        config.read_timeout = Some(request_timeout);
        config.write_timeout = Some(request_timeout);
        // Count the read timeout from each request, not from when a pooled connection
        // went idle.
        config.reset_reader_on_write = true;
        Self {
            name: name.to_owned(),
            reference,
            digest,
            config,
            metrics: clusters.metrics.clone(),
            transports: clusters.transports.clone(),
            kept_clients: clusters.kept_clients.clone(),
            request_timeout,
            kinds: tokio::sync::RwLock::default(),
            client: std::sync::OnceLock::new(),
            last_used: AtomicU64::new(clusters.started.elapsed().as_secs()),
        }
    }

    /// The cluster's client, over the shared transport (see [`crate::transport`]). Kept
    /// for the calls that follow while fewer than [`KEPT_CLIENTS`] clusters keep one: an
    /// operation makes several calls, and building a client (its layers, its buffer task)
    /// for each cost about a tenth of the worker's throughput. A cluster unused for
    /// `clusters.idle_timeout` is dropped with its client.
    pub fn client(&self) -> std::result::Result<kube::Client, OpError> {
        if let Some(client) = self.client.get() {
            return Ok(client.clone());
        }
        let calls = crate::api_calls::ApiCallLayer::new(
            &self.name,
            &self.config.cluster_url,
            self.metrics.clone(),
        );
        let client = self.transports.client(&self.config, calls).map_err(|e| {
            OpError::UnknownCluster(format!("{}: cannot build a client: {e}", self.name))
        })?;
        let room = self
            .kept_clients
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < KEPT_CLIENTS).then_some(n + 1)
            })
            .is_ok();
        if room && self.client.set(client.clone()).is_err() {
            // Another call kept one first.
            self.kept_clients.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(client)
    }

    /// Bounds one API call by the request timeout.
    pub async fn call<T>(
        &self,
        verb: Verb,
        object: &ObjectRef,
        fut: impl Future<Output = kube::Result<T>>,
    ) -> std::result::Result<T, OpError> {
        match tokio::time::timeout(self.request_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(OpError::Kube {
                verb,
                object: object.to_string(),
                source,
            }),
            Err(_) => Err(OpError::Timeout {
                verb,
                object: object.to_string(),
                after: self.request_timeout,
            }),
        }
    }

    /// Resolves an object's kind, from the cache or by asking the cluster. Only successes
    /// are cached, so a kind the cluster did not serve a moment ago (a CRD created earlier
    /// in the same operation) is looked up again.
    pub async fn resolve(&self, object: &ObjectRef) -> std::result::Result<Kind, OpError> {
        if let Some(kind) = self
            .kinds
            .read()
            .await
            .get(&object.api_version)
            .and_then(|kinds| kinds.get(&object.kind))
        {
            return Ok(kind.clone());
        }
        let (group, version) = match object.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", object.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &object.kind);
        let unknown = || OpError::UnknownKind {
            object: object.to_string(),
            kind: format!("{}/{}", object.api_version, object.kind),
            expected_soon: false,
        };
        match self
            .call(
                Verb::Discover,
                object,
                discovery::pinned_kind(&self.client()?, &gvk),
            )
            .await
        {
            Ok(kind) => {
                self.kinds
                    .write()
                    .await
                    .entry(object.api_version.clone())
                    .or_default()
                    .insert(object.kind.clone(), kind.clone());
                Ok(kind)
            }
            Err(OpError::Kube {
                source: kube::Error::Discovery(_),
                ..
            }) => Err(unknown()),
            Err(OpError::Kube {
                source: kube::Error::Api(status),
                ..
            }) if status.code == 404 => Err(unknown()),
            Err(other) => Err(other),
        }
    }

    /// Forgets a kind, so the next use discovers it again (after a 404 that may mean the
    /// kind, not the object, went away).
    pub async fn forget(&self, object: &ObjectRef) {
        if let Some(kinds) = self.kinds.write().await.get_mut(&object.api_version) {
            kinds.remove(&object.kind);
        }
    }

    /// The API server's version, as a probe reads it (`/version`).
    pub async fn version(&self) -> std::result::Result<String, OpError> {
        let object = ObjectRef {
            api_version: "v1".into(),
            kind: "Version".into(),
            namespace: None,
            name: self.name.clone(),
        };
        let info = self
            .call(Verb::Get, &object, self.client()?.apiserver_version())
            .await?;
        Ok(info.git_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: a
  cluster: {server: "http://127.0.0.1:1/a"}
- name: b
  cluster: {server: "http://127.0.0.1:1/b"}
users:
- name: a
  user: {token: secret-a}
- name: b
  user: {token: secret-b}
contexts:
- name: a
  context: {cluster: a, user: a}
- name: b
  context: {cluster: b, user: b}
"#;

    fn entry(name: &str, context: &str) -> ClusterEntry {
        let now = jiff::Timestamp::now();
        ClusterEntry {
            name: longshore_contract::ClusterName::new(name.to_owned()).unwrap(),
            labels: Default::default(),
            pool: longshore_contract::PoolName::default(),
            credentials: Reference::Kubeconfig {
                context: context.to_owned(),
            },
            registered_at: now,
            registered_by: "test".into(),
            updated_at: now,
            updated_by: "test".into(),
        }
    }

    async fn load(dir: &tempfile::TempDir) -> Clusters {
        let path = dir.path().join("config");
        std::fs::write(&path, KUBECONFIG).unwrap();
        let config = ClustersConfig {
            kubeconfig: Some(path),
            ..Default::default()
        };
        Clusters::load(&config, Duration::from_secs(5), &Arc::default())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_probe_keeps_no_client_and_an_operation_keeps_one_it_shares() {
        let dir = tempfile::tempdir().unwrap();
        let clusters = load(&dir).await;
        assert_eq!(clusters.references(), ["kubeconfig:a", "kubeconfig:b"]);

        let probed = clusters.once(&entry("a", "a")).await.unwrap();
        assert_eq!(probed.config.cluster_url.path(), "/a");
        assert_eq!(clusters.drop_idle(), 0, "a probe's cluster is not kept");

        let used = clusters.get(&entry("a", "a")).await.unwrap();
        let again = clusters.get(&entry("a", "a")).await.unwrap();
        assert!(Arc::ptr_eq(&used, &again), "one cluster, shared");
        assert_eq!(clusters.drop_idle(), 1);
        let probed = clusters.once(&entry("a", "a")).await.unwrap();
        assert!(Arc::ptr_eq(&used, &probed), "a probe uses the one in use");

        // The entry now names other credentials: built anew from those.
        let moved = clusters.get(&entry("a", "b")).await.unwrap();
        assert_eq!(moved.config.cluster_url.path(), "/b");
        assert!(!Arc::ptr_eq(&used, &moved));

        let missing = clusters.get(&entry("c", "c")).await.err().unwrap();
        assert!(
            matches!(&missing, OpError::NoCredentials { reference, .. } if reference == "kubeconfig:c"),
            "{missing:?}"
        );
    }

    #[tokio::test]
    async fn clients_are_kept_for_a_bounded_number_of_clusters() {
        let dir = tempfile::tempdir().unwrap();
        let clusters = load(&dir).await;
        let mut in_use = Vec::new();
        for i in 0..KEPT_CLIENTS + 20 {
            let cluster = clusters.get(&entry(&format!("c{i}"), "a")).await.unwrap();
            cluster.client().unwrap();
            cluster.client().unwrap();
            in_use.push(cluster);
        }
        assert_eq!(clusters.kept_clients.load(Ordering::SeqCst), KEPT_CLIENTS);
        // Dropped with its cluster, which makes room for another.
        in_use.truncate(10);
        clusters.clients.lock().unwrap().clear();
        assert_eq!(clusters.kept_clients.load(Ordering::SeqCst), 10);
    }
}
