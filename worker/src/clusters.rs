//! The cluster registry: a Kubernetes client per named cluster, and per cluster a cache of
//! discovered kinds so any kind the cluster serves (custom resources included) can be used.
//!
//! A worker may serve thousands of clusters, most of them idle at any moment. Each
//! cluster's configuration is read and checked at start (so a broken one stops the worker
//! with its name), but its client (connection pool, TLS set-up) is built on first use: a
//! fleet costs little memory and starts in well under a second.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{self, ApiCapabilities, ApiResource};
use tokio::sync::RwLock;

use crate::config::ClustersConfig;
use crate::error::{Error, OpError, Result, Verb};
use longshore_contract::cluster::dns_label_problem;
use longshore_contract::spec::ObjectRef;

/// A resolved kind: where its objects live and what they support.
pub type Kind = (ApiResource, ApiCapabilities);

/// The clusters a worker can act on, by name.
#[derive(Clone, Default)]
pub struct Registry {
    clusters: HashMap<String, Arc<Cluster>>,
}

/// One cluster: its client and what has been discovered about it.
pub struct Cluster {
    pub name: String,
    config: kube::Config,
    client: std::sync::OnceLock<kube::Client>,
    /// Per-cluster API metrics, recorded by the client's [`crate::api_calls`] layer.
    metrics: Arc<crate::metrics::Metrics>,
    request_timeout: Duration,
    kinds: RwLock<HashMap<(String, String), Kind>>,
}

impl Registry {
    /// Builds a client for each configured cluster. Fails (naming the cluster) if one
    /// cannot be built: a worker that silently lacks a cluster would fail its operations.
    pub async fn load(
        config: &ClustersConfig,
        request_timeout: Duration,
        metrics: &Arc<crate::metrics::Metrics>,
    ) -> Result<Self> {
        let mut registry = Self::default();
        if let Some(path) = &config.kubeconfig {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| Error::Clusters(format!("{}: {e}", path.display())))?;
            let contexts: Vec<String> = if config.contexts.is_empty() {
                file.contexts.iter().map(|c| c.name.clone()).collect()
            } else {
                config.contexts.clone()
            };
            for context in contexts {
                if let Some(reason) = dns_label_problem(&context) {
                    return Err(Error::Clusters(format!(
                        "context {context:?} in {} cannot name a cluster: {reason}",
                        path.display()
                    )));
                }
                let options = KubeConfigOptions {
                    context: Some(context.clone()),
                    ..Default::default()
                };
                // Only this context's entries: cloning the whole file per context would make
                // loading a fleet quadratic.
                let kube_config =
                    kube::Config::from_custom_kubeconfig(only_context(&file, &context), &options)
                        .await
                        .map_err(|e| Error::Clusters(format!("context {context}: {e}")))?;
                registry.insert(&context, kube_config, request_timeout, metrics)?;
            }
        }
        if let Some(name) = &config.in_cluster {
            let kube_config = kube::Config::incluster()
                .map_err(|e| Error::Clusters(format!("in-cluster config for {name}: {e}")))?;
            registry.insert(name, kube_config, request_timeout, metrics)?;
        }
        Ok(registry)
    }

    fn insert(
        &mut self,
        name: &str,
        mut config: kube::Config,
        request_timeout: Duration,
        metrics: &Arc<crate::metrics::Metrics>,
    ) -> Result<()> {
        // Retries belong to the work queue (see `policy`): kube's own retry layer would hold
        // a worker slot for minutes on a throttled cluster, invisible to `max_deliver`.
        config.default_retry = false;
        config.connect_timeout = Some(request_timeout);
        config.read_timeout = Some(request_timeout);
        config.write_timeout = Some(request_timeout);
        // Count the read timeout from each request, not from when a pooled connection
        // went idle.
        config.reset_reader_on_write = true;
        self.clusters.insert(
            name.to_owned(),
            Arc::new(Cluster {
                name: name.to_owned(),
                config,
                client: std::sync::OnceLock::new(),
                metrics: metrics.clone(),
                request_timeout,
                kinds: RwLock::default(),
            }),
        );
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Cluster>> {
        self.clusters.get(name).cloned()
    }

    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.clusters.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
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

impl Cluster {
    /// The cluster's client, built on first use.
    pub fn client(&self) -> Result<kube::Client, OpError> {
        if let Some(client) = self.client.get() {
            return Ok(client.clone());
        }
        let calls = crate::api_calls::ApiCallLayer::new(
            &self.name,
            &self.config.cluster_url,
            self.metrics.clone(),
        );
        let client = kube::client::ClientBuilder::try_from(self.config.clone())
            .map_err(|e| {
                OpError::UnknownCluster(format!("{}: cannot build a client: {e}", self.name))
            })?
            .with_layer(&calls)
            .build();
        Ok(self.client.get_or_init(|| client).clone())
    }

    /// Bounds one API call by the request timeout.
    pub async fn call<T>(
        &self,
        verb: Verb,
        object: &ObjectRef,
        fut: impl Future<Output = kube::Result<T>>,
    ) -> Result<T, OpError> {
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
    pub async fn resolve(&self, object: &ObjectRef) -> Result<Kind, OpError> {
        let key = (object.api_version.clone(), object.kind.clone());
        if let Some(kind) = self.kinds.read().await.get(&key) {
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
                self.kinds.write().await.insert(key, kind.clone());
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
        let key = (object.api_version.clone(), object.kind.clone());
        self.kinds.write().await.remove(&key);
    }
}
