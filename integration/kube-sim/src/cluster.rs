//! One simulated cluster: its objects, kinds, write log and faults, and the public
//! [`ClusterHandle`] tests use to look inside.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde_json::Value;

use crate::auth::Credentials;
use crate::faults::{Decision, Faults};
use crate::object;
use crate::registry::Registry;
use crate::rollout::Rollouts;
use crate::store::Store;
use crate::writelog::{WriteLog, WriteRecord};

/// Namespaces every cluster starts with.
const SEED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

#[derive(Debug)]
pub(crate) struct ClusterState {
    pub store: Store,
    pub registry: Registry,
    pub writes: WriteLog,
    pub rollouts: crate::rollout::Controller,
    /// How long a new CRD takes to become Established.
    pub crd_establish_delay: std::time::Duration,
}

/// What every cluster of one simulator is made with.
#[derive(Debug)]
pub(crate) struct ClusterDefaults {
    /// `http://ADDR`, the simulator's URL.
    pub base_url: String,
    pub history_limit: usize,
    pub rollouts: Rollouts,
    /// Whether each cluster gets a bearer token.
    pub auth_tokens: bool,
    pub crd_establish_delay: std::time::Duration,
}

#[derive(Debug)]
pub(crate) struct Cluster {
    pub name: String,
    defaults: Arc<ClusterDefaults>,
    created: jiff::Timestamp,
    /// Made on first use, so that a fleet of clusters nobody talks to costs little.
    state: OnceLock<Mutex<ClusterState>>,
    faults: Mutex<Faults>,
    pub credentials: Credentials,
    /// Watches open now (a client that hangs up closes its own).
    pub open_watches: Arc<std::sync::atomic::AtomicUsize>,
    /// Bumped to end every open watch with 410 Gone (history compacted under it).
    pub expiry: tokio::sync::watch::Sender<u64>,
}

impl Cluster {
    pub fn new(name: &str, defaults: Arc<ClusterDefaults>, faults: Faults) -> Self {
        Cluster {
            name: name.to_string(),
            defaults: defaults.clone(),
            created: jiff::Timestamp::now(),
            state: OnceLock::new(),
            faults: Mutex::new(faults),
            credentials: Credentials::new(defaults.auth_tokens),
            open_watches: Arc::default(),
            expiry: tokio::sync::watch::Sender::new(0),
        }
    }

    /// `http://ADDR/clusters/NAME`.
    pub fn server_url(&self) -> String {
        format!("{}/clusters/{}", self.defaults.base_url, self.name)
    }

    /// The state a cluster starts with: the seed namespaces, created when the cluster was
    /// (so a cluster used late has namespaces as old as it is).
    fn seed(&self) -> Mutex<ClusterState> {
        let mut store = Store::new(self.defaults.history_limit.max(1));
        let created = object::time(self.created);
        for ns in SEED_NAMESPACES {
            store.seed(
                ("".into(), "namespaces".into(), String::new(), (*ns).into()),
                object::namespace_object(ns, &created),
            );
        }
        Mutex::new(ClusterState {
            store,
            registry: Registry::builtin(),
            writes: WriteLog::default(),
            rollouts: crate::rollout::Controller::new(self.defaults.rollouts.clone()),
            crd_establish_delay: self.defaults.crd_establish_delay,
        })
    }

    /// Locks the state. Never held across an `.await`; a poisoned lock is still usable
    /// because every mutation leaves the state consistent before it can panic.
    pub fn lock(&self) -> MutexGuard<'_, ClusterState> {
        let state = self.state.get_or_init(|| self.seed());
        state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks the state if anything has used it yet (nothing happens in a cluster before).
    pub fn lock_if_used(&self) -> Option<MutexGuard<'_, ClusterState>> {
        let state = self.state.get()?;
        Some(state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn decide_faults(&self, is_write: bool) -> Decision {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .decide(is_write)
    }

    pub fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_faults(&self, f: Faults) {
        *self.faults.lock().unwrap_or_else(|p| p.into_inner()) = f;
    }
}

/// A cheap, clonable handle on one simulated cluster.
#[derive(Debug, Clone)]
pub struct ClusterHandle(pub(crate) Arc<Cluster>);

impl ClusterHandle {
    /// The cluster's name (also its kubeconfig context name).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// How many watches are open on this cluster now, of any resource: one ends when its
    /// client hangs up, its `timeoutSeconds` passes, or the cluster is removed.
    pub fn open_watches(&self) -> usize {
        self.0
            .open_watches
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Compacts the watch history and ends every open watch with a 410 Gone ERROR event,
    /// as an API server does when the version a watch stands at is compacted away: each
    /// watcher must list again (resuming from a version older than now is refused too).
    pub fn expire_watches(&self) {
        self.0.lock().store.compact();
        self.0.expiry.send_modify(|n| *n += 1);
    }

    /// The cluster's server URL, e.g. `http://127.0.0.1:PORT/clusters/prod`.
    pub fn server_url(&self) -> String {
        self.0.server_url()
    }

    /// A kubeconfig for this cluster alone: its context, cluster and user all named after
    /// it, the user holding its current token.
    pub fn kubeconfig(&self) -> serde_json::Value {
        crate::kubeconfig::build(std::slice::from_ref(&self.0))
    }

    /// [`ClusterHandle::kubeconfig`] as YAML.
    pub fn kubeconfig_yaml(&self) -> String {
        crate::kubeconfig::to_yaml(&self.kubeconfig())
    }

    /// Writes [`ClusterHandle::kubeconfig`] to `path` atomically (a temporary file in the
    /// same directory, renamed over it), owner-only.
    pub fn write_kubeconfig(&self, path: impl AsRef<std::path::Path>) -> Result<(), crate::Error> {
        let path = path.as_ref();
        crate::kubeconfig::write_atomic(path, &self.kubeconfig_yaml()).map_err(|source| {
            crate::Error::WriteKubeconfig {
                path: path.display().to_string(),
                source,
            }
        })
    }

    /// The bearer token requests to this cluster must carry, if it requires one (see
    /// [`crate::SimOptions::auth_tokens`]).
    pub fn token(&self) -> Option<String> {
        self.0.credentials.token()
    }

    /// Replaces the cluster's token with a new random one and returns it. From the next
    /// request on, the old token gets 401, on connections already open too; watches already
    /// running continue (a real server authenticates a watch once, when it starts). A
    /// cluster without a token gets one, and requires it from then on. Kubeconfig files
    /// already written are not rewritten: see [`crate::KubeSim::write_kubeconfig_for`].
    pub fn rotate_token(&self) -> String {
        let token = self.0.credentials.rotate();
        tracing::info!(cluster = self.name(), "token rotated");
        token
    }

    /// Every mutating request so far (including failed, dry-run and faulted ones).
    pub fn writes(&self) -> Vec<WriteRecord> {
        self.0.lock().writes.records()
    }

    /// Empties the write log (sequence numbers keep counting).
    pub fn clear_writes(&self) {
        self.0.lock().writes.clear();
    }

    /// Reads an object in-process. `kind_or_resource` may be a kind (`Deployment`), a plural,
    /// a singular or a short name (`deploy`); `namespace` is None for cluster-scoped kinds.
    pub fn get(
        &self,
        api_version: &str,
        kind_or_resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let state = self.0.lock();
        let rt = state.registry.find_kind(api_version, kind_or_resource)?;
        let (_, version) = crate::registry::split_api_version(api_version);
        let ns = if rt.namespaced {
            namespace.unwrap_or("default")
        } else {
            ""
        };
        let key = (
            rt.group.clone(),
            rt.plural.clone(),
            ns.to_string(),
            name.to_string(),
        );
        state
            .store
            .get(&key)
            .map(|o| object::present(o.clone(), &rt, version))
    }

    /// Lists objects of a kind in-process, in one namespace or all (None).
    pub fn list(
        &self,
        api_version: &str,
        kind_or_resource: &str,
        namespace: Option<&str>,
    ) -> Vec<Value> {
        let state = self.0.lock();
        let Some(rt) = state.registry.find_kind(api_version, kind_or_resource) else {
            return Vec::new();
        };
        let (_, version) = crate::registry::split_api_version(api_version);
        state
            .store
            .list(&rt.group, &rt.plural, namespace)
            .map(|(_, o)| object::present(o.clone(), &rt, version))
            .collect()
    }

    /// The cluster's current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.0.lock().store.resource_version()
    }

    /// Forgets the watch history: resuming a watch from any older version then gets 410 Gone.
    pub fn compact(&self) {
        self.0.lock().store.compact();
    }

    /// The current faults (with `next` counters as they stand now).
    pub fn faults(&self) -> Faults {
        self.0.faults()
    }

    /// Replaces the faults; takes effect for the next request.
    pub fn set_faults(&self, faults: Faults) {
        self.0.set_faults(faults);
    }

    /// The rollout simulation's settings (see [`crate::Rollouts`]).
    pub fn rollouts(&self) -> crate::Rollouts {
        self.0.lock().rollouts.settings.clone()
    }

    /// Replaces the rollout simulation's settings; rollouts under way continue under the
    /// new ones from where they are.
    pub fn set_rollouts(&self, rollouts: crate::Rollouts) {
        self.0.lock().rollouts.settings = rollouts;
    }

    /// How long this cluster's new CRDs take to become Established (see
    /// [`crate::SimOptions::crd_establish_delay`]); CRDs already waiting keep theirs.
    pub fn set_crd_establish_delay(&self, delay: std::time::Duration) {
        self.0.lock().crd_establish_delay = delay;
    }
}
