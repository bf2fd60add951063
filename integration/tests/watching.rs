//! Watching a fleet with the same replicas, against a real nats-server, kube-sim and the
//! real worker binaries as processes: each cluster watched by exactly one live replica (by
//! its lease, and by kube-sim's count of open watches), a SIGKILLed replica's clusters
//! watched again within one lease, scaling from two replicas to four and back with no
//! cluster unwatched for a lease, and a scale-in handing leases over at once.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use longshore_integration::{nats::NatsServer, process::Process, wait::eventually};
use longshore_kube_sim::{KubeSim, SimOptions};
use serde_json::Value;

/// The kinds a worker watches by default: each watcher opens one watch per kind.
const KINDS: usize = 2;
/// The default watch lease.
const LEASE: Duration = Duration::from_secs(10);

fn clusters(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("c{i}")).collect()
}

fn worker(nats: &NatsServer, kubeconfig: &Path, logs: &Path, id: &str) -> Process {
    longshore_integration::worker::process(&nats.url(), kubeconfig, logs, id).unwrap()
}

/// A nats-server, kube-sim with `n` clusters, and their kubeconfig.
struct Fleet {
    nats: NatsServer,
    names: Vec<String>,
    sim: KubeSim,
    dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
    js: jetstream::Context,
}

impl Fleet {
    async fn start(n: usize) -> Self {
        let nats = NatsServer::start().await.unwrap();
        let names = clusters(n);
        let sim = KubeSim::start(SimOptions {
            clusters: names.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig).unwrap();
        let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        Self {
            nats,
            names,
            sim,
            dir,
            kubeconfig,
            js,
        }
    }
}

/// Every lease now: cluster → holder.
async fn leases(js: &jetstream::Context) -> BTreeMap<String, String> {
    let Ok(kv) = js.get_key_value("LONGSHORE_WATCH_LEASES").await else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    let Ok(keys) = kv.keys().await else {
        return out;
    };
    let keys: Vec<String> = keys.filter_map(|k| async { k.ok() }).collect().await;
    for key in keys {
        if let Ok(Some(value)) = kv.get(&key).await
            && let Ok(lease) = serde_json::from_slice::<Value>(&value)
        {
            out.insert(key, lease["holder"].as_str().unwrap_or_default().to_owned());
        }
    }
    out
}

/// Open watches per cluster, as kube-sim counts them.
fn open_watches(sim: &KubeSim, names: &[String]) -> BTreeMap<String, usize> {
    names
        .iter()
        .map(|n| (n.clone(), sim.cluster(n).unwrap().open_watches()))
        .collect()
}

/// Waits until every cluster has a lease held by one of `holders` and exactly one
/// watcher's watches open; the leases then.
async fn settled(
    js: &jetstream::Context,
    sim: &KubeSim,
    names: &[String],
    holders: &[&str],
    within: Duration,
) -> anyhow::Result<BTreeMap<String, String>> {
    eventually(within, "one watcher per cluster", || async {
        let held = leases(js).await;
        let watches = open_watches(sim, names);
        let all_held = names
            .iter()
            .all(|n| held.get(n).is_some_and(|h| holders.contains(&h.as_str())));
        let one_each = watches.values().all(|w| *w == KINDS);
        (all_held && one_each).then_some(held)
    })
    .await
}

#[tokio::test]
async fn each_cluster_is_watched_by_one_replica_and_a_killed_ones_are_taken_over_within_a_lease() {
    let Fleet {
        nats,
        names,
        sim,
        dir,
        kubeconfig,
        js,
    } = Fleet::start(12).await;

    let mut w0 = worker(&nats, &kubeconfig, dir.path(), "worker-0");
    let _w1 = worker(&nats, &kubeconfig, dir.path(), "worker-1");
    let held = settled(
        &js,
        &sim,
        &names,
        &["worker-0", "worker-1"],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let per_holder = |held: &BTreeMap<String, String>, who: &str| {
        held.values().filter(|h| h.as_str() == who).count()
    };
    // Spread over both (rendezvous hashing: all twelve on one has odds of 1 in 2,048).
    assert!(per_holder(&held, "worker-0") > 0, "{held:?}");
    assert!(per_holder(&held, "worker-1") > 0, "{held:?}");

    // Steady: still one watcher each, a few renewals later.
    let later = Instant::now() + LEASE;
    while Instant::now() < later {
        assert_eq!(
            open_watches(&sim, &names)
                .values()
                .filter(|w| **w != KINDS)
                .count(),
            0,
            "a cluster with other than one watcher at steady state"
        );
        assert_eq!(leases(&js).await, held, "leases moved at steady state");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // SIGKILL one: its clusters are watched again, by the other, within one lease.
    let killed = Instant::now();
    w0.kill();
    let after = settled(&js, &sim, &names, &["worker-1"], Duration::from_secs(30))
        .await
        .unwrap();
    let took = killed.elapsed();
    println!("taken over in {took:?}");
    assert_eq!(per_holder(&after, "worker-1"), names.len());
    assert!(
        took <= LEASE,
        "taken over in {took:?}, more than the lease ({LEASE:?})"
    );
}

/// Samples kube-sim's open watches until `done` resolves: the longest any cluster went
/// without a watch, and the longest it had more than one watcher's.
async fn gaps_while<T>(
    sim: &KubeSim,
    names: &[String],
    done: impl std::future::Future<Output = T>,
) -> (T, Duration, Duration) {
    let mut unwatched: BTreeMap<String, Instant> = BTreeMap::new();
    let mut doubled: BTreeMap<String, Instant> = BTreeMap::new();
    let (mut longest_unwatched, mut longest_doubled) = (Duration::ZERO, Duration::ZERO);
    tokio::pin!(done);
    loop {
        let now = Instant::now();
        for (name, open) in open_watches(sim, names) {
            let track = |map: &mut BTreeMap<String, Instant>, on: bool, longest: &mut Duration| {
                if on {
                    let since = *map.entry(name.clone()).or_insert(now);
                    *longest = (*longest).max(now - since);
                } else {
                    map.remove(&name);
                }
            };
            track(&mut unwatched, open == 0, &mut longest_unwatched);
            track(&mut doubled, open > KINDS, &mut longest_doubled);
        }
        tokio::select! {
            out = &mut done => return (out, longest_unwatched, longest_doubled),
            // A sampling period, not a wait for anything.
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

#[tokio::test]
async fn scaling_from_two_to_four_and_back_leaves_no_cluster_unwatched_for_a_lease() {
    let Fleet {
        nats,
        names,
        sim,
        dir,
        kubeconfig,
        js,
    } = Fleet::start(16).await;
    let two = ["worker-0", "worker-1"];
    let four = ["worker-0", "worker-1", "worker-2", "worker-3"];
    let _w: Vec<Process> = two
        .iter()
        .map(|id| worker(&nats, &kubeconfig, dir.path(), id))
        .collect();
    settled(&js, &sim, &names, &two, Duration::from_secs(30))
        .await
        .unwrap();

    // Scale out: the new replicas get their shares, handed over by the old holders.
    let mut added: Vec<Process> = four[2..]
        .iter()
        .map(|id| worker(&nats, &kubeconfig, dir.path(), id))
        .collect();
    let spread_out = async {
        eventually(
            LEASE * 2,
            "the new replicas to take their shares",
            || async {
                let held = leases(&js).await;
                let all = names.iter().all(|n| held.contains_key(n));
                let each = four.iter().all(|w| held.values().any(|h| h.as_str() == *w));
                let watched = open_watches(&sim, &names).values().all(|w| *w == KINDS);
                (all && each && watched).then_some(held)
            },
        )
        .await
    };
    let (spread, unwatched, doubled) = gaps_while(&sim, &names, spread_out).await;
    spread.unwrap();
    println!("scale out: longest unwatched {unwatched:?}, longest watched twice {doubled:?}");
    // Within a lease, as promised; far within it, because leases are handed over (the old
    // holder releases) rather than left to expire.
    assert!(
        unwatched < LEASE / 5,
        "a cluster unwatched for {unwatched:?}"
    );

    // Scale in (SIGTERM): their leases are released and taken back.
    let scale_in = async {
        for w in &mut added {
            assert!(w.terminate(Duration::from_secs(10)).await.unwrap());
        }
        settled(&js, &sim, &names, &two, LEASE * 2).await
    };
    let (back, unwatched, doubled) = gaps_while(&sim, &names, scale_in).await;
    back.unwrap();
    println!("scale in: longest unwatched {unwatched:?}, longest watched twice {doubled:?}");
    assert!(
        unwatched < LEASE / 5,
        "a cluster unwatched for {unwatched:?}"
    );
}

#[tokio::test]
async fn scaling_out_and_in_moves_leases_with_no_cluster_watched_twice_for_long() {
    let Fleet {
        nats,
        names,
        sim,
        dir,
        kubeconfig,
        js,
    } = Fleet::start(12).await;

    let _w0 = worker(&nats, &kubeconfig, dir.path(), "worker-0");
    settled(&js, &sim, &names, &["worker-0"], Duration::from_secs(30))
        .await
        .unwrap();

    // Scale out: the new replica gets its share, handed over by the old holder.
    let mut w1 = worker(&nats, &kubeconfig, dir.path(), "worker-1");
    let spread = eventually(LEASE, "worker-1 to take its share", || async {
        let held = leases(&js).await;
        let ones = held.values().filter(|h| h.as_str() == "worker-1").count();
        let watched = open_watches(&sim, &names).values().all(|w| *w == KINDS);
        (ones > 0 && held.len() == names.len() && watched).then_some(held)
    })
    .await
    .unwrap();
    assert!(spread.values().any(|h| h == "worker-0"), "{spread:?}");

    // Scale in (SIGTERM): its leases are released at once, not left to expire.
    let stopping = Instant::now();
    assert!(w1.terminate(Duration::from_secs(10)).await.unwrap());
    settled(&js, &sim, &names, &["worker-0"], LEASE)
        .await
        .unwrap();
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "a drained replica's clusters were taken back in {took:?}: left to expire?"
    );
}
