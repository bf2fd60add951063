//! Prometheus's own tools, for the tests of the metrics and the alerting rules: `promtool`
//! (Debian's `prometheus` package) and a real `prometheus` server scraping the binaries.
//!
//! Found as `LONGSHORE_PROMTOOL` / `LONGSHORE_PROMETHEUS`, or on `PATH`. Without them a test
//! is skipped (it says so), except under `CI=true`, where it fails: CI installs them.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context as _;
use serde_json::Value;

use crate::{
    process::{Process, free_port},
    wait::eventually,
};

/// The tool `name` (`promtool`, `prometheus`), or `None` when the test should be skipped.
/// Panics under `CI=true` when it is missing.
pub fn tool(name: &str) -> Option<PathBuf> {
    let var = format!("LONGSHORE_{}", name.to_ascii_uppercase());
    let found = std::env::var_os(&var).map(PathBuf::from).or_else(|| {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no {name} (apt-get install prometheus, or set {var}); CI=true makes this a failure"
        );
        eprintln!("skipped: no {name} installed (integration/test.sh installs it)");
    }
    found
}

/// Runs `promtool` with `args` in `dir`, `input` on its standard input: its output, or an
/// error with that output when it exits with a failure.
pub fn promtool(
    promtool: &Path,
    dir: &Path,
    args: &[&str],
    input: Option<&str>,
) -> anyhow::Result<String> {
    use std::io::Write as _;
    let mut child = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("promtool's stdin")?;
    stdin.write_all(input.unwrap_or("").as_bytes())?;
    drop(stdin);
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        out.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    Ok(text)
}

/// A `prometheus` server on a free port scraping `targets` (`host:port`, one job each)
/// every second, with `rule_file` loaded if given.
pub struct Prometheus {
    pub url: String,
    _process: Process,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Prometheus {
    pub async fn start(
        binary: &Path,
        targets: &[(&str, String)],
        rule_file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
        );
        if let Some(rules) = rule_file {
            config.push_str(&format!("rule_files:\n  - {}\n", rules.display()));
        }
        config.push_str("scrape_configs:\n");
        for (job, target) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let process = Process::spawn(
            "prometheus",
            binary,
            &[
                &format!("--config.file={}", config_path.display()),
                &format!("--storage.tsdb.path={}", dir.path().join("data").display()),
                &format!("--web.listen-address=127.0.0.1:{port}"),
            ],
            &[],
            dir.path(),
        )?;
        let http = reqwest::Client::new();
        let ready = format!("{url}/-/ready");
        eventually(Duration::from_secs(30), "prometheus to be ready", || {
            let r = http.get(&ready).send();
            async move { r.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
        })
        .await
        .with_context(|| {
            let log = std::fs::read_to_string(dir.path().join("prometheus.log"));
            format!("prometheus log:\n{}", log.unwrap_or_default())
        })?;
        Ok(Self {
            url,
            _process: process,
            _dir: dir,
            http,
        })
    }

    /// Evaluates `expr` now: each series of the result as its labels and value. An
    /// expression Prometheus refuses is an error naming why.
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<(Value, f64)>> {
        let body: Value = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(
            body["status"] == "success",
            "{expr}: {}",
            body["error"].as_str().unwrap_or("refused")
        );
        let series = body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(series
            .into_iter()
            .map(|s| {
                let value = s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (s["metric"].clone(), value)
            })
            .collect())
    }

    /// What the server has logged: for a test's failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The rules Prometheus loaded, by group: what `/api/v1/rules` reports.
    pub async fn rules(&self) -> anyhow::Result<Value> {
        let body: Value = self
            .http
            .get(format!("{}/api/v1/rules", self.url))
            .send()
            .await?
            .json()
            .await?;
        Ok(body["data"]["groups"].clone())
    }
}
