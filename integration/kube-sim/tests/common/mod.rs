//! Shared test fixtures: start a simulator, build kube clients, talk raw HTTP.
#![allow(dead_code)]

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use longshore_kube_sim::{KubeSim, SimOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const WAIT: Duration = Duration::from_secs(10);

pub async fn start(clusters: &[&str]) -> KubeSim {
    KubeSim::start(SimOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        clusters: clusters.iter().map(|c| c.to_string()).collect(),
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    })
    .await
    .expect("sim starts")
}

pub async fn client(sim: &KubeSim, context: &str) -> kube::Client {
    kube::Client::try_from(config(sim, context).await).expect("client")
}

/// A client without kube's default retries of 429/503/504, to see each answer.
pub async fn client_without_retries(sim: &KubeSim, context: &str) -> kube::Client {
    let mut config = config(sim, context).await;
    config.default_retry = false;
    kube::Client::try_from(config).expect("client")
}

async fn config(sim: &KubeSim, context: &str) -> kube::Config {
    let kubeconfig = Kubeconfig::from_yaml(&sim.kubeconfig_yaml()).expect("kubeconfig parses");
    let options = KubeConfigOptions {
        context: Some(context.into()),
        ..Default::default()
    };
    kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .expect("config")
}

/// The API Status of a kube error.
pub fn status(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A minimal HTTP/1.1 exchange (Connection: close), for admin endpoints and raw headers.
pub async fn http(sim: &KubeSim, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(sim.addr())
        .await
        .expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_string(), body.to_string())
}
