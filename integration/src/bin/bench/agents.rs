//! The cost of the leaf hop: operations to a private cluster, carried out by an agent that
//! reaches the hub through a leaf node, against operations to a hub cluster carried out by
//! a hub worker, interleaved in the same run at a light offered rate (HTTP submit to status
//! succeeded).

use std::time::Duration;

use futures::StreamExt;
use longshore_contract::{ClusterName, PoolName, agent};
use longshore_testkit::leaf::{DOMAIN, Hub, Leaf, LeafUser};
use serde_json::{Value, json};

use crate::{
    rig::{Rig, apply_configmap},
    stats::percentiles,
};

const HUB_CLUSTER: &str = "prod";
const EDGE: &str = "edge";
const POOL: &str = "agent-edge";

pub struct Params {
    /// Operations to each cluster.
    pub ops: usize,
    /// Offered rate, both clusters together, operations per second.
    pub rate: u32,
}

pub async fn run(p: &Params) -> anyhow::Result<Value> {
    let permissions = agent::permissions(
        &PoolName::new(POOL).map_err(anyhow::Error::msg)?,
        &ClusterName::new(EDGE).map_err(anyhow::Error::msg)?,
        Some(DOMAIN),
    );
    let user = LeafUser::new(permissions.nats_conf(""));
    let hub = Hub::start(&[&user]).await?;
    let leaf = Leaf::start(&hub.leafnode_url(), &user).await?;
    let (url, pid, leaf_url) = (hub.url(), hub.pid(), leaf.url());
    let mut rig = Rig::start_on(
        Box::new((hub, leaf)),
        url,
        pid,
        vec![HUB_CLUSTER.into(), EDGE.into()],
        1,
    )
    .await?;
    let dir = rig.log_dir();
    let (prod_kubeconfig, edge_kubeconfig) =
        (dir.join("prod.kubeconfig"), dir.join("edge.kubeconfig"));
    rig.sim
        .cluster(HUB_CLUSTER)
        .expect("prod")
        .write_kubeconfig(&prod_kubeconfig)?;
    rig.sim
        .cluster(EDGE)
        .expect("edge")
        .write_kubeconfig(&edge_kubeconfig)?;
    // The agent first, so it registers its cluster; the hub's worker has prod alone.
    let agent = longshore_integration::worker::agent_process(
        &leaf_url,
        DOMAIN,
        POOL,
        EDGE,
        &edge_kubeconfig,
        &dir,
        "agent-0",
        &[("LONGSHORE_LOG", "warn")],
    )?;
    rig.workers.push(agent);
    rig.add_worker(&[(
        "LONGSHORE_CLUSTERS__KUBECONFIG",
        prod_kubeconfig.display().to_string(),
    )])?;
    // Warm up both paths (and wait for the agent's registration to reach the dispatcher).
    let mut warm = Vec::new();
    for (i, cluster) in [HUB_CLUSTER, EDGE, HUB_CLUSTER, EDGE]
        .into_iter()
        .enumerate()
    {
        warm.push(
            rig.submit(i, &apply_configmap(cluster, &format!("warm-{i}"), i))
                .await?,
        );
    }
    rig.wait_all(&warm, Duration::from_secs(60)).await?;

    let n = p.ops * 2;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(p.rate)));
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let (mut hub_ops, mut edge_ops) = (Vec::new(), Vec::new());
    let mut next = 0;
    while hub_ops.len() + edge_ops.len() < n {
        tokio::select! {
            _ = ticker.tick(), if next < n => {
                let (rig, i) = (&rig, next);
                let cluster = if i % 2 == 0 { HUB_CLUSTER } else { EDGE };
                in_flight.push(async move {
                    (cluster, rig.submit(100 + i, &apply_configmap(cluster, &format!("light-{i}"), i)).await)
                });
                next += 1;
            }
            Some((cluster, result)) = in_flight.next() => {
                if cluster == EDGE { edge_ops.push(result?) } else { hub_ops.push(result?) }
            }
        }
    }
    drop(in_flight);
    let (mut hub_latency, _) = rig.wait_all(&hub_ops, Duration::from_secs(120)).await?;
    let (mut edge_latency, _) = rig.wait_all(&edge_ops, Duration::from_secs(120)).await?;
    rig.stop_workers().await;
    let (hub, edge) = (
        percentiles(&mut hub_latency),
        percentiles(&mut edge_latency),
    );
    let at = |v: &Value, q: &str| v[q].as_f64().unwrap_or(0.0);
    let extra = |q: &str| ((at(&edge, q) - at(&hub, q)) * 100.0).round() / 100.0;
    let ratio = at(&edge, "p50_ms") / at(&hub, "p50_ms").max(0.001);
    Ok(json!({
        "offered_ops_per_s": p.rate, "ops_per_cluster": p.ops,
        "hub_worker": hub, "agent_via_leaf": edge,
        "leaf_hop_extra_ms": {"p50": extra("p50_ms"), "p99": extra("p99_ms")},
        "agent_over_hub_p50": (ratio * 1000.0).round() / 1000.0,
    }))
}
