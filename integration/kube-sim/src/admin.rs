//! `/_sim/…`: debug and admin endpoints (never faulted).
//!
//! - `GET /_sim/clusters`: names and server URLs
//! - `PUT|DELETE /_sim/clusters/{name}`: add / remove a cluster (see `fleet`)
//! - `POST /_sim/clusters/{name}/token`: rotate the cluster's bearer token (`{"token": …}`)
//! - `GET /_sim/clusters/{name}/kubeconfig`: a kubeconfig for that cluster alone (YAML)
//! - `GET /_sim/kubeconfig`: the kubeconfig (YAML)
//! - `GET|DELETE /_sim/clusters/{name}/writes`: the write log / clear it
//! - `GET|PUT|DELETE /_sim/clusters/{name}/faults`: read / replace / clear faults (JSON)
//! - `POST /_sim/clusters/{name}/compact`: forget watch history (older versions get 410)
//! - `GET|PUT|DELETE /_sim/clusters/{name}/rollouts`: read / replace / turn off the rollout
//!   simulation (JSON)

mod fleet;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;

use crate::cluster::Cluster;
use crate::faults::Faults;
use crate::kubeconfig;
use crate::rollout::Rollouts;
use crate::server::Shared;
use crate::status::{self, Error};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_sim/clusters", get(clusters))
        .route("/_sim/kubeconfig", get(kubeconfig_yaml))
        .route(
            "/_sim/clusters/{name}",
            put(fleet::add).delete(fleet::remove),
        )
        .route("/_sim/clusters/{name}/token", post(fleet::rotate_token))
        .route("/_sim/clusters/{name}/kubeconfig", get(fleet::kubeconfig))
        .route(
            "/_sim/clusters/{name}/writes",
            get(writes).delete(clear_writes),
        )
        .route(
            "/_sim/clusters/{name}/faults",
            get(faults).put(set_faults).delete(clear_faults),
        )
        .route("/_sim/clusters/{name}/compact", post(compact))
        .route(
            "/_sim/clusters/{name}/rollouts",
            get(rollouts).put(set_rollouts).delete(clear_rollouts),
        )
}

fn cluster(shared: &Shared, name: &str) -> Result<Arc<Cluster>, Box<Response>> {
    let missing = || Box::new(Error::not_found("", "clusters", name).into_response());
    shared.fleet.get(name).ok_or_else(missing)
}

async fn clusters(State(shared): State<Arc<Shared>>) -> Response {
    let list: Vec<_> = shared
        .fleet
        .names()
        .iter()
        .map(|n| json!({"name": n, "server": format!("{}/clusters/{n}", shared.base_url)}))
        .collect();
    status::json_body(&json!({"clusters": list}))
}

async fn kubeconfig_yaml(State(shared): State<Arc<Shared>>) -> Response {
    kubeconfig::to_yaml(&kubeconfig::build(&shared.fleet.all())).into_response()
}

async fn writes(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match cluster(&shared, &name) {
        Ok(c) => status::json_body(&json!(c.lock().writes.records())),
        Err(r) => *r,
    }
}

async fn clear_writes(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match cluster(&shared, &name) {
        Ok(c) => {
            c.lock().writes.clear();
            status::json_body(&json!({}))
        }
        Err(r) => *r,
    }
}

async fn faults(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match cluster(&shared, &name) {
        Ok(c) => status::json_body(&json!(c.faults())),
        Err(r) => *r,
    }
}

async fn set_faults(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: bytes::Bytes,
) -> Response {
    let c = match cluster(&shared, &name) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let faults = match setting::<Faults>(&body, "faults", Faults::validate) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    c.set_faults(faults);
    status::json_body(&json!(c.faults()))
}

async fn clear_faults(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match cluster(&shared, &name) {
        Ok(c) => {
            c.set_faults(Faults::default());
            status::json_body(&json!(c.faults()))
        }
        Err(r) => *r,
    }
}

async fn compact(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match cluster(&shared, &name) {
        Ok(c) => {
            c.lock().store.compact();
            status::json_body(&json!({}))
        }
        Err(r) => *r,
    }
}

async fn rollouts(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match cluster(&shared, &name) {
        Ok(c) => status::json_body(&json!(c.lock().rollouts.settings)),
        Err(r) => *r,
    }
}

async fn set_rollouts(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: bytes::Bytes,
) -> Response {
    let c = match cluster(&shared, &name) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let rollouts = match setting::<Rollouts>(&body, "rollouts", Rollouts::validate) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    c.lock().rollouts.settings = rollouts.clone();
    status::json_body(&json!(rollouts))
}

/// A runtime setting from a request body: 400 if it is not the JSON expected, 422 (naming
/// the field) if its values are refused.
fn setting<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
    validate: impl Fn(&T) -> Result<(), String>,
) -> Result<T, Box<Response>> {
    let value: T = serde_json::from_slice(body).map_err(|e| {
        Box::new(Error::BadRequest(format!("invalid {what} JSON: {e}")).into_response())
    })?;
    validate(&value).map_err(|e| Box::new(Error::Unprocessable(e).into_response()))?;
    Ok(value)
}

async fn clear_rollouts(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match cluster(&shared, &name) {
        Ok(c) => {
            let off = Rollouts::default();
            c.lock().rollouts.settings = off.clone();
            status::json_body(&json!(off))
        }
        Err(r) => *r,
    }
}
