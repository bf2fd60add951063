//! HTTPS on the dispatcher's listener: certificates made at test time, the real dispatcher
//! serving them, and a client that trusts only the test CA.

use std::{path::Path, time::Duration};

use longshore_integration::{dispatcher::Dispatcher, nats::NatsServer, wait::eventually};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio_util::sync::CancellationToken;

/// A CA and a certificate it signed for `san`, as PEM: (ca, cert, key).
struct Pki {
    ca: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self {
            ca: issuer.pem(),
            issuer,
        }
    }

    fn leaf(&self, san: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![san.to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, contents: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Starts the dispatcher with `tls` on a free port; returns its address and a stop handle.
async fn start(
    nats: &NatsServer,
    tls: longshore_dispatcher::tls::TlsConfig,
) -> (
    std::net::SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let mut config = Dispatcher::config(&nats.url(), &["prod"]);
    config.http.tls = tls;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            longshore_dispatcher::run(config, listener, stop.cancelled_owned())
                .await
                .unwrap()
        }
    });
    (addr, stop, task)
}

fn client(ca: &str, identity: Option<&str>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5));
    if let Some(pem) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn https_is_served_with_the_configured_certificate_and_plain_http_is_refused() {
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let (cert, key) = pki.leaf("127.0.0.1");
    let tls = longshore_dispatcher::tls::TlsConfig {
        cert_file: Some(write(dir.path(), "cert.pem", &cert)),
        key_file: Some(write(dir.path(), "key.pem", &key)),
        client_ca_file: None,
    };
    let (addr, stop, task) = start(&nats, tls).await;

    let https = client(&pki.ca, None);
    let url = format!("https://{addr}/readyz");
    eventually(
        Duration::from_secs(15),
        "HTTPS /readyz to answer 200",
        || {
            let request = https.get(&url).send();
            async move { request.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
        },
    )
    .await
    .unwrap();
    let submitted = https
        .post(format!("https://{addr}/v1/operations"))
        .json(&serde_json::json!({"cluster": "prod", "action": "apply", "manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "default"}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), 202);

    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(
        plain
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_err(),
        "plain HTTP must not be answered on the HTTPS port"
    );
    // A client that does not trust the CA refuses the server.
    assert!(
        reqwest::Client::new()
            .get(format!("https://{addr}/healthz"))
            .send()
            .await
            .is_err()
    );

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the dispatcher drains and stops")
        .unwrap();
}

#[tokio::test]
async fn with_a_client_ca_only_clients_it_signed_are_served() {
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let (cert, key) = pki.leaf("127.0.0.1");
    let clients = Pki::new();
    let (client_cert, client_key) = clients.leaf("pipeline");
    let tls = longshore_dispatcher::tls::TlsConfig {
        cert_file: Some(write(dir.path(), "cert.pem", &cert)),
        key_file: Some(write(dir.path(), "key.pem", &key)),
        client_ca_file: Some(write(dir.path(), "clients.pem", &clients.ca)),
    };
    let (addr, stop, _task) = start(&nats, tls).await;
    let url = format!("https://{addr}/healthz");

    let with_cert = client(&pki.ca, Some(&format!("{client_cert}{client_key}")));
    eventually(
        Duration::from_secs(15),
        "mTLS /healthz to answer 200",
        || {
            let request = with_cert.get(&url).send();
            async move { request.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
        },
    )
    .await
    .unwrap();
    assert!(
        client(&pki.ca, None).get(&url).send().await.is_err(),
        "a client without a certificate must be refused"
    );
    let (stranger_cert, stranger_key) = Pki::new().leaf("stranger");
    assert!(
        client(&pki.ca, Some(&format!("{stranger_cert}{stranger_key}")))
            .get(&url)
            .send()
            .await
            .is_err(),
        "a certificate from another CA must be refused"
    );
    stop.cancel();
}

#[test]
fn bad_tls_settings_are_refused_naming_the_key() {
    use longshore_dispatcher::tls::TlsConfig;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let (cert, key) = pki.leaf("127.0.0.1");
    let cert = write(dir.path(), "cert.pem", &cert);
    let key = write(dir.path(), "key.pem", &key);
    let err = |tls: TlsConfig| tls.server_config("http.tls").unwrap_err().to_string();

    let only_cert = TlsConfig {
        cert_file: Some(cert.clone()),
        ..Default::default()
    };
    assert!(err(only_cert).contains("http.tls.key_file"));
    let missing = TlsConfig {
        cert_file: Some(dir.path().join("nope.pem")),
        key_file: Some(key.clone()),
        client_ca_file: None,
    };
    assert!(err(missing).contains("http.tls.cert_file"));
    let swapped = TlsConfig {
        cert_file: Some(key.clone()),
        key_file: Some(cert.clone()),
        client_ca_file: None,
    };
    assert!(err(swapped).contains("http.tls.cert_file"));
    let (_, other_key) = pki.leaf("127.0.0.1");
    let mismatched = TlsConfig {
        cert_file: Some(cert.clone()),
        key_file: Some(write(dir.path(), "other.pem", &other_key)),
        client_ca_file: None,
    };
    assert!(err(mismatched).contains("http.tls.key_file"));
    let good = TlsConfig {
        cert_file: Some(cert),
        key_file: Some(key),
        client_ca_file: None,
    };
    assert!(good.server_config("http.tls").unwrap().is_some());
    assert!(
        TlsConfig::default()
            .server_config("http.tls")
            .unwrap()
            .is_none()
    );
}
