//! A fleet of 10,000 clusters with tokens: starting it must be cheap, so that fleet-sized tests and
//! benchmarks can run on a small machine. Timings are printed, never asserted; memory is
//! asserted only against a bound far above what is expected.

use std::time::Instant;

use longshore_kube_sim::{KubeSim, SimOptions};

const FLEET: usize = 10_000;

/// Resident set size of this process, in KiB, from /proc/self/status.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_clusters_start_cheaply() {
    let names: Vec<String> = (1..=FLEET).map(|i| format!("c{i:05}")).collect();
    let before = rss_kib();
    let started = Instant::now();
    let sim = KubeSim::start(SimOptions {
        clusters: names,
        auth_tokens: true,
        ..Default::default()
    })
    .await
    .expect("fleet starts");
    let elapsed = started.elapsed();
    let after = rss_kib();
    let grown = after.zip(before).map(|(a, b)| a.saturating_sub(b) / 1024);
    println!(
        "{FLEET} clusters: start took {elapsed:?}; RSS {} MiB -> {} MiB (+{} MiB)",
        before.unwrap_or(0) / 1024,
        after.unwrap_or(0) / 1024,
        grown.unwrap_or(0)
    );
    assert_eq!(sim.cluster_names().len(), FLEET);
    if let Some(grown) = grown {
        assert!(grown < 256, "starting {FLEET} clusters took {grown} MiB");
    }

    let dir = tempfile::tempdir().unwrap();
    let written = Instant::now();
    sim.write_kubeconfig_dir(dir.path())
        .expect("kubeconfigs written");
    println!(
        "{FLEET} kubeconfig files written in {:?}",
        written.elapsed()
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), FLEET);

    // What a cluster costs once something has used it (seed namespaces, kinds, no watch).
    let touched = Instant::now();
    for name in sim.cluster_names() {
        assert_eq!(sim.cluster(&name).expect("listed").resource_version(), 5);
    }
    println!(
        "{FLEET} clusters used once: took {:?}; RSS {} MiB",
        touched.elapsed(),
        rss_kib().unwrap_or(0) / 1024
    );
    sim.shutdown().await;
}
