//! The worker's errors: [`Error`] for what stops the worker, [`OpError`] for what stops one
//! operation. [`crate::policy`] is the one place that turns an `OpError` into a decision.

use std::time::Duration;

/// Why the worker could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot load clusters: {0}")]
    Clusters(String),
    #[error("cannot connect to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
    #[error(transparent)]
    Provision(#[from] longshore_contract::jetstream::ProvisionError),
    #[error("cannot pull from the pool consumer: {0}")]
    Pull(String),
    /// A part of the start-up ended without an answer (it panicked).
    #[error("start-up failed: {0}")]
    Start(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The Kubernetes call an error came from: the same status means different things for
/// different verbs (a 404 is done for a delete, a failure for a patch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Discover,
    Get,
    Apply,
    Create,
    Replace,
    Patch,
    Delete,
    Scale,
    List,
    Watch,
}

/// Why one operation did not (yet) succeed. Objects are named as text (`v1/ConfigMap
/// default/web`): errors only ever describe them.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The API server (or the connection to it) refused a call.
    #[error("{verb:?} {object}: {source}")]
    Kube {
        verb: Verb,
        object: String,
        #[source]
        source: kube::Error,
    },
    /// A call did not answer within `request_timeout`.
    #[error("{verb:?} {object}: no answer within {after:?}")]
    Timeout {
        verb: Verb,
        object: String,
        after: Duration,
    },
    /// The cluster does not serve the object's kind. `expected_soon` is set when the same
    /// operation created a CustomResourceDefinition earlier, which the API server may still
    /// be establishing.
    #[error("{object}: the cluster does not serve {kind}")]
    UnknownKind {
        object: String,
        kind: String,
        expected_soon: bool,
    },
    /// A CustomResourceDefinition the operation applied was not Established (or its kind
    /// not served) within `clusters.crd_established_timeout`.
    #[error(
        "CustomResourceDefinition {crd} was not Established within {}s ({state}); its custom resources were not applied",
        after.as_secs()
    )]
    NotEstablished {
        crd: String,
        after: Duration,
        state: String,
    },
    /// `create` found an object this operation did not create.
    #[error("create {object}: already exists and was not created by this operation")]
    AlreadyExists { object: String },
    /// A manifest that cannot be sent as it is.
    #[error("{object}: {reason}")]
    Manifest { object: String, reason: String },
    /// The operation's cluster is not registered (or its client cannot be built).
    #[error("unknown cluster: {0}")]
    UnknownCluster(String),
    /// The cluster is this pool's, but this worker lacks the credential it names (a
    /// kubeconfig context not in its files, say): perhaps not mounted yet.
    #[error("cluster {cluster}: this pool has no credentials {reference}")]
    NoCredentials { cluster: String, reference: String },
    /// The message is not a readable envelope.
    #[error("{0}")]
    Malformed(String),
    /// The status record could not be read or written.
    #[error("status record: {0}")]
    Status(String),
    /// A bucket (records or fences) did not answer, or its value was unreadable.
    #[error(transparent)]
    Store(#[from] longshore_contract::store::StoreError),
    /// Another operation holds the object's fence and its lease is live: this one waits
    /// its turn (see [`crate::fence`]).
    #[error("{object}: fenced by operation {holder} until {lease_until}")]
    Fenced {
        object: String,
        holder: String,
        lease_until: jiff::Timestamp,
    },
    /// The fences could not be read or written, or this worker could not renew its lease
    /// in time and must not write under it any more.
    #[error("object fence: {0}")]
    Fence(String),
    /// A waited-for object failed: its rollout exceeded its progress deadline, its Job
    /// failed. `reason` comes from the object's conditions.
    #[error("{object}: {reason}")]
    Rollout { object: String, reason: String },
    /// A waited-for object was not ready when the wait's timeout ran out.
    #[error("{object}: not ready after {after:?} ({progress})")]
    WaitTimeout {
        object: String,
        after: Duration,
        progress: String,
    },
}
