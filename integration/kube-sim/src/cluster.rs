//! One simulated cluster: its objects, kinds, write log and faults, and the public
//! [`ClusterHandle`] tests use to look inside.

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use crate::faults::{Decision, Faults};
use crate::object;
use crate::registry::Registry;
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
}

#[derive(Debug)]
pub(crate) struct Cluster {
    pub name: String,
    state: Mutex<ClusterState>,
    faults: Mutex<Faults>,
}

impl Cluster {
    pub fn new(
        name: &str,
        history_limit: usize,
        faults: Faults,
        rollouts: crate::rollout::Rollouts,
    ) -> Self {
        let mut store = Store::new(history_limit);
        let now = object::now();
        for ns in SEED_NAMESPACES {
            store.put(
                ("".into(), "namespaces".into(), String::new(), (*ns).into()),
                object::namespace_object(ns, &now),
            );
        }
        Cluster {
            name: name.to_string(),
            state: Mutex::new(ClusterState {
                store,
                registry: Registry::builtin(),
                writes: WriteLog::default(),
                rollouts: crate::rollout::Controller::new(rollouts),
            }),
            faults: Mutex::new(faults),
        }
    }

    /// Locks the state. Never held across an `.await`; a poisoned lock is still usable
    /// because every mutation leaves the state consistent before it can panic.
    pub fn lock(&self) -> MutexGuard<'_, ClusterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
}
