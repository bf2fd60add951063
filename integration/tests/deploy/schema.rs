//! KEDA's `ScaledObject` (keda.sh/v1alpha1), which k8s-openapi does not know: the fields of
//! KEDA 2.x's CRD that longshore's manifests may use, each struct closed to unknown keys,
//! and the `nats-jetstream` trigger's metadata typed as the scaler parses it (all strings).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::autoscaling::v2::HorizontalPodAutoscalerBehavior,
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScaledObject {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: ScaledObjectSpec,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScaledObjectSpec {
    pub scale_target_ref: ScaleTarget,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub polling_interval: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooldown_period: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_cooldown_period: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_replica_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_replica_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replica_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advanced: Option<Advanced>,
    pub triggers: Vec<Trigger>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScaleTarget {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_source_container_name: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Fallback {
    pub failure_threshold: u32,
    pub replicas: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behavior: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Advanced {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_to_original_replica_count: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub horizontal_pod_autoscaler_config: Option<HpaConfig>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HpaConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Trigger {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_cached_metrics: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication_ref: Option<BTreeMap<String, String>>,
    pub metadata: NatsJetStreamMetadata,
}

/// The `nats-jetstream` scaler's parameters (KEDA 2.8+). KEDA reads trigger metadata as
/// strings, so numbers must be quoted.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NatsJetStreamMetadata {
    pub nats_server_monitoring_endpoint: String,
    pub account: String,
    pub stream: String,
    pub consumer: String,
    pub lag_threshold: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation_lag_threshold: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_https: Option<String>,
}
