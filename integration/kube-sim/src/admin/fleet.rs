//! `/_sim/clusters/{name}`: adding and removing clusters while running, rotating tokens,
//! and each one's own kubeconfig.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::server::Shared;
use crate::status::{self, Error};

/// `PUT`: adds the cluster (201), or leaves an existing one as it is (200); 422 for a name
/// that is not a DNS label.
pub(super) async fn add(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let code = match shared.fleet.add(&name) {
        Ok(_) => {
            tracing::info!(cluster = name, "cluster added");
            StatusCode::CREATED
        }
        Err(crate::Error::ClusterExists(_)) => StatusCode::OK,
        Err(e) => return Error::Unprocessable(e.to_string()).into_response(),
    };
    let server = format!("{}/clusters/{name}", shared.base_url);
    let mut r = status::json_body(&json!({"name": name, "server": server}));
    *r.status_mut() = code;
    r
}

/// `DELETE`: removes the cluster; 404 if there is none of that name.
pub(super) async fn remove(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Response {
    match shared.fleet.remove(&name) {
        Ok(_) => {
            tracing::info!(cluster = name, "cluster removed");
            status::json_body(&json!({}))
        }
        Err(_) => Error::not_found("", "clusters", &name).into_response(),
    }
}

/// `POST …/token`: a new token for the cluster, the old one refused from now on.
pub(super) async fn rotate_token(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Response {
    match shared.fleet.get(&name) {
        Some(c) => {
            let token = crate::ClusterHandle(c).rotate_token();
            status::json_body(&json!({"token": token}))
        }
        None => Error::not_found("", "clusters", &name).into_response(),
    }
}

/// `GET …/kubeconfig`: the cluster's own kubeconfig, as `write_kubeconfig_dir` writes it.
pub(super) async fn kubeconfig(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Response {
    match shared.fleet.get(&name) {
        Some(c) => crate::ClusterHandle(c).kubeconfig_yaml().into_response(),
        None => Error::not_found("", "clusters", &name).into_response(),
    }
}
