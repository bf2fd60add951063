//! The `kube-sim` binary with a fleet: `--cluster-count`, `--auth-tokens` and
//! `--write-kubeconfig-dir`, checked over HTTP with the tokens from the files it wrote.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(addr: &str, path: &str, token: Option<&str>) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_fleet_with_tokens_and_a_kubeconfig_dir() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfigs = dir.path().join("kubeconfigs");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["--listen", "127.0.0.1:0", "--cluster-count", "12"])
        .args(["--cluster-prefix", "edge-", "--auth-tokens"])
        .arg("--write-kubeconfig-dir")
        .arg(&kubeconfigs)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("kube-sim runs");
    let stdout = child.stdout.take().unwrap();
    let _child = Killed(child);
    let mut printed = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let done = line.contains("admin:");
        printed.push(line);
        if done {
            break;
        }
    }
    let addr = printed[0]
        .strip_prefix("kube-sim listening on http://")
        .expect("the first line names the address")
        .to_string();
    assert!(
        printed
            .iter()
            .any(|l| l.contains("12 clusters, edge-01 … edge-12")),
        "{printed:?}"
    );

    let mut files: Vec<String> = std::fs::read_dir(&kubeconfigs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), 12);
    assert_eq!(
        (files[0].as_str(), files[11].as_str()),
        ("edge-01.yaml", "edge-12.yaml")
    );

    let text = std::fs::read_to_string(kubeconfigs.join("edge-07.yaml")).unwrap();
    let k: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let token = k["users"][0]["user"]["token"].as_str().unwrap();
    assert!(
        !printed.iter().any(|l| l.contains(token)),
        "a token is never printed"
    );
    let ns = "/clusters/edge-07/api/v1/namespaces";
    assert_eq!(get(&addr, ns, Some(token)), 200);
    assert_eq!(get(&addr, ns, None), 401);
    assert_eq!(
        get(&addr, "/clusters/edge-08/api/v1/namespaces", Some(token)),
        401
    );
    assert_eq!(get(&addr, "/clusters/edge-07/version", None), 200);
}
