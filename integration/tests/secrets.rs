//! Secret data never leaks: a Secret goes through the whole system (dispatcher, JetStream,
//! worker, kube-sim) and every output of the run is scanned for its values: the logs of
//! dispatcher and worker at debug level, status records, the event stream, the kube-sim
//! write log, and the error bodies of refused requests that carried the Secret.
//!
//! One test in this file: it installs the process-wide log subscriber.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use longshore_integration::system::System;
use serde_json::{Value, json};

/// Distinctive values, in plain and in base64 form, that must appear nowhere.
const PLAIN: &str = "pl41n-s3cr3t-zq7";
const ENCODED_VALUE: &str = "ZW5jb2RlZC1zM2NyM3QtcXE5"; // "encoded-s3cr3t-qq9"
const ENCODED_PLAIN: &str = "encoded-s3cr3t-qq9";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn secret(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": {"name": name, "namespace": "default"},
           "data": {"token": ENCODED_VALUE},
           "stringData": {"password": PLAIN}})
}

fn assert_clean(what: &str, text: &str) {
    for needle in [PLAIN, ENCODED_VALUE, ENCODED_PLAIN] {
        assert!(!text.contains(needle), "{what} leaks {needle:?}:\n{text}");
    }
}

#[tokio::test]
async fn secret_data_appears_in_no_output() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let system = System::start(&["prod"], 1, 1).await.unwrap();
    let url = system.dispatchers[0].url.clone();
    let http = reqwest::Client::new();
    let mut outputs = Vec::new();

    // Applied, and failed at the API server (an invalid name for a Secret).
    let ok = system
        .accept(
            0,
            &json!({"cluster": "prod", "action": "apply", "manifests": [secret("creds")]}),
            Some("secret-1"),
        )
        .await
        .unwrap();
    let bad = system
        .accept(
            0,
            &json!({"cluster": "prod", "action": "apply", "manifests": [secret("Not_Valid")]}),
            None,
        )
        .await
        .unwrap();
    let record = system
        .wait_terminal(&ok, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(record["state"], "succeeded", "{record}");
    let failed = system
        .wait_terminal(&bad, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(failed["state"], "failed", "{failed}");
    outputs.push(("status record".to_owned(), record.to_string()));
    outputs.push(("failed status record".to_owned(), failed.to_string()));
    let events = http
        .get(format!("{url}/v1/operations/{ok}/events"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(events.contains("succeeded"));
    outputs.push(("event stream".to_owned(), events));

    // The object did reach the cluster (so the scan is not vacuous)...
    let stored = system.cluster("prod").writes();
    assert!(
        stored
            .iter()
            .any(|w| w.name.as_deref() == Some("creds") && w.changed)
    );
    // ...but the write log records none of its data.
    outputs.push((
        "kube-sim write log".to_owned(),
        serde_json::to_string(&stored).unwrap(),
    ));

    // Refused requests that carried the Secret: the same key with another body, a YAML
    // error inside the Secret, and a bad option next to it.
    let mut changed = secret("creds");
    changed["stringData"]["extra"] = json!("x");
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: y\nstringData:\n  password: {PLAIN}\n  other: [unclosed {PLAIN}\n"
    );
    let refused = [
        (
            json!({"cluster": "prod", "action": "apply", "manifests": [changed]}),
            Some("secret-1"),
        ),
        (
            json!({"cluster": "prod", "action": "apply", "manifests": yaml}),
            None,
        ),
        (
            json!({"cluster": "prod", "action": "apply", "manifests": [secret("creds")], "options": {"dryRun": "yes"}}),
            None,
        ),
    ];
    for (body, key) in refused {
        let (status, problem) = system.submit(0, &body, key).await.unwrap();
        assert!((400..500).contains(&status), "{status}: {problem}");
        outputs.push((format!("error body ({status})"), problem.to_string()));
    }

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("accepted"),
        "the capture holds the dispatcher's logs:\n{logs}"
    );
    assert!(
        logs.contains(&ok),
        "the capture holds the worker's logs too"
    );
    outputs.push(("logs".to_owned(), logs));
    for (what, text) in &outputs {
        assert_clean(what, text);
    }
}
