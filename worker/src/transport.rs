//! The HTTP transport under every cluster's client, shared between clusters that connect
//! the same way.
//!
//! A kube-rs client built the default way carries its own TLS configuration (a parsed
//! root store) and its own connection pool: about 100 KiB before its first request. A
//! worker serving thousands of clusters would spend most of its memory on copies of the
//! same thing. Here clusters whose TLS settings are the same (the same CA, the same client
//! certificate if any, the same verification choices) share one connector and one pool
//! (a pool keeps connections per host, so sharing it mixes nothing). What differs per
//! cluster stays per cluster: its base URL, its credentials (a bearer token or exec
//! plugin through kube's auth layer), its headers. A cluster behind a proxy gets a transport
//! of its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::{Body, ConfigExt};
use sha2::{Digest, Sha256};
use tower::{BoxError, ServiceBuilder, ServiceExt, util::BoxCloneSyncService};

use crate::api_calls::ApiCallLayer;

/// One shared connector and pool.
type Shared = BoxCloneSyncService<Request<Body>, Response<Incoming>, BoxError>;

/// The transports in use, by TLS profile.
#[derive(Default)]
pub struct Transports {
    by_profile: Mutex<HashMap<[u8; 32], Shared>>,
}

impl Transports {
    /// A client for `config`, on the transport of its TLS profile, with `calls` (the span
    /// and metrics of each request) outermost, so it sees paths as the API names them.
    pub fn client(&self, config: &kube::Config, calls: ApiCallLayer) -> kube::Result<kube::Client> {
        let Some(profile) = profile(config) else {
            // Not shareable (a proxy): kube's own stack.
            return Ok(kube::client::ClientBuilder::try_from(config.clone())?
                .with_layer(&calls)
                .build());
        };
        let shared = {
            let mut by_profile = self.by_profile.lock().unwrap_or_else(|e| e.into_inner());
            match by_profile.get(&profile) {
                Some(shared) => shared.clone(),
                None => {
                    let shared = transport(config)?;
                    by_profile.insert(profile, shared.clone());
                    shared
                }
            }
        };
        let service = ServiceBuilder::new()
            .layer(calls)
            .layer(config.base_uri_layer())
            .option_layer(config.auth_layer()?)
            .layer(config.extra_headers_layer()?)
            .service(shared);
        Ok(kube::Client::new(service, config.default_namespace.clone()))
    }

    /// How many transports exist (one per TLS profile in use).
    pub fn len(&self) -> usize {
        self.by_profile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn transport(config: &kube::Config) -> kube::Result<Shared> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout.or(Some(Duration::from_secs(30))));
    let https = config.rustls_https_connector_with_connector(http)?;
    let client: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
    Ok(BoxCloneSyncService::new(client.map_err(BoxError::from)))
}

/// What makes two clusters' TLS the same, hashed (it may include a client key: only its
/// digest is kept). `None` when the transport cannot be shared.
fn profile(config: &kube::Config) -> Option<[u8; 32]> {
    if config.proxy_url.is_some() || config.auth_info.exec.is_some() {
        // A proxy is per cluster; an exec plugin may hand out a client certificate.
        return None;
    }
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    for cert in config.root_cert.iter().flatten() {
        part(cert);
    }
    part(
        config
            .root_cert_file
            .as_ref()
            .map(|p| p.as_os_str().as_encoded_bytes())
            .unwrap_or_default(),
    );
    let auth = &config.auth_info;
    for field in [
        &auth.client_certificate,
        &auth.client_certificate_data,
        &auth.client_key,
    ] {
        part(field.as_deref().unwrap_or_default().as_bytes());
    }
    let key = auth
        .client_key_data
        .as_ref()
        .map(|k| secrecy::ExposeSecret::expose_secret(k).as_bytes().to_vec());
    part(key.as_deref().unwrap_or_default());
    part(&[u8::from(config.accept_invalid_certs)]);
    part(
        config
            .tls_server_name
            .as_deref()
            .unwrap_or_default()
            .as_bytes(),
    );
    Some(h.finalize().into())
}
