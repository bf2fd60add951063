//! kube-sim: a Kubernetes API stand-in for tests and local try-outs.
//!
//! One process serves several named clusters, each with its own objects, over plain HTTP on
//! one port; a cluster is selected by the path prefix of its server URL
//! (`http://127.0.0.1:PORT/clusters/prod`). It speaks the REST dialect kube-rs and kubectl
//! use: discovery (legacy and aggregated), CRUD, patches, server-side apply with managed
//! fields and conflicts, resourceVersion concurrency, watch, `/scale`, `/status`, dry run,
//! CRDs, and `Status` errors. Clusters can be added and removed while it runs, and each can
//! require its own bearer token, rotated at will. Every write is logged (so tests can count effects), and faults
//! (latency, error statuses, connection resets before or after a commit, unavailability)
//! can be injected per cluster at start or at runtime.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use longshore_kube_sim::{KubeSim, SimOptions};
//! let sim = KubeSim::start(SimOptions {
//!     listen: "127.0.0.1:0".parse()?,
//!     clusters: vec!["prod".into(), "staging".into()],
//!     ..Default::default()
//! })
//! .await?;
//! let kubeconfig = tempfile_path();
//! sim.write_kubeconfig(&kubeconfig)?; // contexts "prod" and "staging"
//! let prod = sim.cluster("prod").expect("started with prod");
//! assert!(prod.writes().is_empty());
//! sim.shutdown().await;
//! # Ok(()) }
//! # fn tempfile_path() -> std::path::PathBuf { "/tmp/kubeconfig".into() }
//! ```
//!
//! Modules: `server` (listener, routing, connection resets) hands cluster requests to
//! `handler` (`auth`, then faults, write log), which calls `verbs` (get/list/create/replace/patch/apply/
//! delete, `/scale`, `/status`) or `watch`; those work on a cluster's `store` (objects, one
//! resourceVersion counter, event history) and `registry` (kinds, CRDs). `ssa` and `fieldset`
//! implement server-side apply; `patch` the other patch types; `status` is the one place
//! errors become `Status` responses; `fleet` holds the clusters by name (added and removed
//! at runtime too); `discovery`, `kubeconfig`, `admin` (`/_sim` endpoints), `faults` and
//! `writelog` are what their names say. `rollout` simulates the workload
//! controllers: status advancing over time, and ReplicaSets with revisions.

mod admin;
mod auth;
mod cluster;
mod discovery;
mod faults;
mod fieldset;
mod fleet;
mod handler;
mod kubeconfig;
mod object;
mod openapi;
mod patch;
mod protobuf;
mod registry;
mod request;
mod rollout;
mod selector;
mod server;
mod ssa;
mod status;
mod store;
mod table;
mod validation;
mod verbs;
mod watch;
mod writelog;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use cluster::ClusterHandle;
pub use faults::{ErrorFault, FaultScope, Faults, Latency, Trigger};
pub use rollout::{REVISION_ANNOTATION, RolloutMode, Rollouts};
pub use writelog::{WriteRecord, WriteVerb};

use cluster::ClusterDefaults;
use fleet::{Fleet, is_dns_label};
use server::Shared;

/// Errors starting the simulator or changing its clusters.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "clusters[{index}]: {name:?} is not a valid cluster name (a DNS label: lowercase letters, digits and '-')"
    )]
    InvalidClusterName { index: usize, name: String },
    #[error(
        "{0:?} is not a valid cluster name (a DNS label: at most 63 lowercase letters, digits and '-', not starting or ending with '-')"
    )]
    InvalidName(String),
    #[error("a cluster named {0:?} already exists")]
    ClusterExists(String),
    #[error("no cluster named {0:?}")]
    NoSuchCluster(String),
    #[error("clusters: {0:?} is listed twice")]
    DuplicateCluster(String),
    #[error("clusters: at least one cluster is required")]
    NoClusters,
    #[error("faults: no cluster named {0:?}")]
    UnknownFaultCluster(String),
    #[error("faults for {cluster:?}: {reason}")]
    InvalidFaults { cluster: String, reason: String },
    #[error("rollouts: {0}")]
    InvalidRollouts(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write the kubeconfig to {path}: {source}")]
    WriteKubeconfig {
        path: String,
        source: std::io::Error,
    },
}

/// How to start a [`KubeSim`].
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Cluster names (DNS labels); each becomes a kubeconfig context.
    pub clusters: Vec<String>,
    /// Faults per cluster at start.
    pub faults: BTreeMap<String, Faults>,
    /// How many events each cluster keeps for watches to resume from.
    pub watch_history: usize,
    /// How often a watch with `allowWatchBookmarks` gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// How long a deleted namespace stays Terminating before its contents are deleted
    /// (so `kubectl delete -f` can still delete what it lists after the namespace).
    pub namespace_deletion_delay: Duration,
    /// The rollout simulation every cluster starts with (off by default); see
    /// [`ClusterHandle::set_rollouts`] to change one cluster's at runtime.
    pub rollouts: Rollouts,
    /// Whether each cluster requires its own random bearer token (off by default: any
    /// request is accepted). Without one, a request gets 401 with an `Unauthorized` Status,
    /// except `/version`, `/healthz`, `/livez` and `/readyz`, which anyone may read (a bad
    /// token is refused there too). The kubeconfigs kube-sim writes carry the tokens; see
    /// [`ClusterHandle::token`] and [`ClusterHandle::rotate_token`].
    pub auth_tokens: bool,
    /// How long a new CustomResourceDefinition takes to become Established. Until then its
    /// condition `Established` is False, its kind is not in discovery, and requests for the
    /// kind get 404 (as on a real server before the CRD is established and discovery has
    /// caught up). Zero (the default): at once. [`ClusterHandle::set_crd_establish_delay`]
    /// changes one cluster's.
    pub crd_establish_delay: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            clusters: vec!["default".into()],
            faults: BTreeMap::new(),
            watch_history: 1000,
            bookmark_interval: Duration::from_secs(5),
            namespace_deletion_delay: Duration::from_millis(200),
            rollouts: Rollouts::default(),
            auth_tokens: false,
            crd_establish_delay: Duration::ZERO,
        }
    }
}

impl SimOptions {
    /// Checks the options before anything is bound, naming the offending field.
    pub fn validate(&self) -> Result<(), Error> {
        if self.clusters.is_empty() {
            return Err(Error::NoClusters);
        }
        let mut seen = HashSet::with_capacity(self.clusters.len());
        for (index, name) in self.clusters.iter().enumerate() {
            if !is_dns_label(name) {
                return Err(Error::InvalidClusterName {
                    index,
                    name: name.clone(),
                });
            }
            if !seen.insert(name.as_str()) {
                return Err(Error::DuplicateCluster(name.clone()));
            }
        }
        for (cluster, f) in &self.faults {
            if !seen.contains(cluster.as_str()) {
                return Err(Error::UnknownFaultCluster(cluster.clone()));
            }
            f.validate().map_err(|reason| Error::InvalidFaults {
                cluster: cluster.clone(),
                reason,
            })?;
        }
        self.rollouts.validate().map_err(Error::InvalidRollouts)?;
        Ok(())
    }
}

/// A running simulator. Dropping it stops it too; [`KubeSim::shutdown`] also waits.
#[derive(Debug)]
pub struct KubeSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    accept: Option<JoinHandle<()>>,
}

impl KubeSim {
    /// Binds the listener and starts serving on the current tokio runtime.
    pub async fn start(options: SimOptions) -> Result<KubeSim, Error> {
        options.validate()?;
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: options.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: options.listen,
            source,
        })?;
        let fleet = Fleet::new(
            ClusterDefaults {
                base_url: format!("http://{addr}"),
                history_limit: options.watch_history,
                rollouts: options.rollouts.clone(),
                auth_tokens: options.auth_tokens,
                crd_establish_delay: options.crd_establish_delay,
            },
            &options.clusters,
            &options.faults,
        );
        let shared = Arc::new(Shared {
            fleet,
            base_url: format!("http://{addr}"),
            bookmark_interval: options.bookmark_interval,
            namespace_deletion_delay: options.namespace_deletion_delay,
        });
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(rollout::run(shared.clone(), shutdown.clone()));
        let accept = tokio::spawn(server::serve(
            listener,
            server::router(shared.clone()),
            shutdown.clone(),
            tracker.clone(),
        ));
        tracing::info!(%addr, clusters = options.clusters.len(), "kube-sim listening");
        Ok(KubeSim {
            addr,
            shared,
            shutdown,
            tracker,
            accept: Some(accept),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server URL of a cluster, e.g. `http://127.0.0.1:PORT/clusters/prod`.
    pub fn server_url(&self, cluster: &str) -> String {
        format!("{}/clusters/{cluster}", self.shared.base_url)
    }

    /// Cluster names, in order.
    pub fn cluster_names(&self) -> Vec<String> {
        self.shared.fleet.names()
    }

    /// A handle on one cluster's state, write log and faults.
    pub fn cluster(&self, name: &str) -> Option<ClusterHandle> {
        self.shared.fleet.get(name).map(ClusterHandle)
    }

    /// Adds a cluster while running, with no faults and the rollout settings and watch
    /// history the simulator started with. It is served at once (see [`KubeSim::server_url`]);
    /// kubeconfigs written before do not list it.
    pub fn add_cluster(&self, name: &str) -> Result<ClusterHandle, Error> {
        let cluster = self.shared.fleet.add(name)?;
        tracing::info!(cluster = name, "cluster added");
        Ok(ClusterHandle(cluster))
    }

    /// Removes a cluster while running. Requests to it get 404 (a `Status` naming the
    /// cluster) from then on, and its open watches end; requests already being handled
    /// finish. The returned handle still reads its last state and write log.
    pub fn remove_cluster(&self, name: &str) -> Result<ClusterHandle, Error> {
        let cluster = self.shared.fleet.remove(name)?;
        tracing::info!(cluster = name, "cluster removed");
        Ok(ClusterHandle(cluster))
    }

    /// The kubeconfig (a context, cluster and user per cluster, all named after it, the
    /// user with the cluster's token) as JSON.
    pub fn kubeconfig(&self) -> serde_json::Value {
        kubeconfig::build(&self.shared.fleet.all())
    }

    /// The kubeconfig as YAML.
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig::to_yaml(&self.kubeconfig())
    }

    /// Writes the kubeconfig file (atomically: a temporary file renamed over it).
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        kubeconfig::write_atomic(path, &self.kubeconfig_yaml()).map_err(|source| {
            Error::WriteKubeconfig {
                path: path.display().to_string(),
                source,
            }
        })
    }

    /// Writes one kubeconfig per cluster, `<dir>/<cluster>.yaml` (see
    /// [`ClusterHandle::kubeconfig`]), as a Secret of kubeconfigs mounted into a pod would
    /// look. Creates `dir` if needed. Each file is replaced atomically, so a reader watching
    /// the directory never sees a partial file; files of clusters removed since are left
    /// alone (see [`KubeSim::remove_kubeconfig_for`]).
    pub fn write_kubeconfig_dir(&self, dir: impl AsRef<Path>) -> Result<(), Error> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| Error::WriteKubeconfig {
            path: dir.display().to_string(),
            source,
        })?;
        for cluster in self.shared.fleet.all() {
            ClusterHandle(cluster.clone())
                .write_kubeconfig(kubeconfig::file_for(dir, &cluster.name))?;
        }
        Ok(())
    }

    /// Rewrites one cluster's file in a [`KubeSim::write_kubeconfig_dir`] directory, e.g.
    /// after [`ClusterHandle::rotate_token`] or [`KubeSim::add_cluster`]; returns its path.
    pub fn write_kubeconfig_for(
        &self,
        dir: impl AsRef<Path>,
        cluster: &str,
    ) -> Result<PathBuf, Error> {
        let handle = self
            .cluster(cluster)
            .ok_or_else(|| Error::NoSuchCluster(cluster.to_string()))?;
        let path = kubeconfig::file_for(dir.as_ref(), cluster);
        handle.write_kubeconfig(&path)?;
        Ok(path)
    }

    /// Deletes one cluster's file from a [`KubeSim::write_kubeconfig_dir`] directory, e.g.
    /// after [`KubeSim::remove_cluster`]; a file already gone is fine.
    pub fn remove_kubeconfig_for(&self, dir: impl AsRef<Path>, cluster: &str) -> Result<(), Error> {
        let path = kubeconfig::file_for(dir.as_ref(), cluster);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::WriteKubeconfig {
                path: path.display().to_string(),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Stops accepting, closes every connection (watches included) and waits for that.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
