//! The clusters one simulator serves, by name: those it started with and those added or
//! removed at runtime.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::Error;
use crate::cluster::{Cluster, ClusterDefaults, ClusterState};
use crate::faults::Faults;

/// Whether `s` is a DNS label (RFC 1123): what a cluster name must be, since it is a
/// kubeconfig context name, a path segment and a file name.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[derive(Debug)]
pub(crate) struct Fleet {
    clusters: RwLock<BTreeMap<String, Arc<Cluster>>>,
    defaults: Arc<ClusterDefaults>,
}

impl Fleet {
    /// A fleet of `names` (already validated), with their faults at start.
    pub fn new(
        defaults: ClusterDefaults,
        names: &[String],
        faults: &BTreeMap<String, Faults>,
    ) -> Self {
        let defaults = Arc::new(defaults);
        let clusters = names
            .iter()
            .map(|name| {
                let f = faults.get(name).cloned().unwrap_or_default();
                let cluster = Cluster::new(name, defaults.clone(), f);
                (name.clone(), Arc::new(cluster))
            })
            .collect();
        Fleet {
            clusters: RwLock::new(clusters),
            defaults,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Arc<Cluster>>> {
        self.clusters.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Arc<Cluster>>> {
        self.clusters.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Cluster>> {
        self.read().get(name).cloned()
    }

    /// Names, in order.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Every cluster, in name order.
    pub fn all(&self) -> Vec<Arc<Cluster>> {
        self.read().values().cloned().collect()
    }

    /// Adds a cluster with no faults and the start's defaults.
    pub fn add(&self, name: &str) -> Result<Arc<Cluster>, Error> {
        if !is_dns_label(name) {
            return Err(Error::InvalidName(name.to_string()));
        }
        let mut clusters = self.write();
        if clusters.contains_key(name) {
            return Err(Error::ClusterExists(name.to_string()));
        }
        let cluster = Arc::new(Cluster::new(name, self.defaults.clone(), Faults::default()));
        clusters.insert(name.to_string(), cluster.clone());
        Ok(cluster)
    }

    /// Removes a cluster: requests to it get 404 from now on, and its open watches end.
    pub fn remove(&self, name: &str) -> Result<Arc<Cluster>, Error> {
        let cluster = self
            .write()
            .remove(name)
            .ok_or_else(|| Error::NoSuchCluster(name.to_string()))?;
        cluster.lock().store.close();
        Ok(cluster)
    }

    /// Runs `f` on the state of every cluster something has used.
    pub fn for_each_used(&self, mut f: impl FnMut(&mut ClusterState)) {
        for cluster in self.read().values() {
            if let Some(mut state) = cluster.lock_if_used() {
                f(&mut state);
            }
        }
    }
}
