//! Fleet rollouts, the model: which clusters a rollout selects, in what order, and how they
//! fall into waves, checked before anything is accepted (`docs/rollouts.md`).
//!
//! - [`RolloutId`]: `ro-` and 32 base32 characters, derived from (source, idempotency key)
//!   as an operation's id is; each cluster's operation id is derived from the rollout's id
//!   and the cluster ([`RolloutId::operation`]), so a wave published twice acts once.
//! - [`Selection`]: a label selector or an explicit list, resolved once ([`resolve`]) into
//!   the ordered list of clusters the rollout will ever touch.
//! - [`Strategy`]: waves as cumulative counts or percentages of that list ([`plan`]),
//!   failure budgets, a pause between waves, approval gates, a per-cluster concurrency and
//!   an optional health soak.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::id::base32_lower;
use crate::labels::{Labels, Selector};
use crate::spec::FieldError;
use crate::{ClusterName, IdempotencyKey, OperationId};

pub mod state;
pub mod step;

pub use state::{Phase, Progress, Rollout};

/// Where an operation of a rollout comes from: carried in its envelope and its record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutLink {
    pub id: RolloutId,
    /// The cluster's position in the rollout's resolved list (from 0).
    pub index: usize,
    /// Its wave (from 1).
    pub wave: usize,
    /// 0 for the first operation on the cluster, then each retry's number.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A fleet rollout's id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RolloutId(String);

const PREFIX: &str = "ro-";

impl RolloutId {
    /// The id for `key` as submitted by `source`. Distinct from the operation id of the
    /// same (source, key): the hash is tagged.
    pub fn derive(source: &str, key: &IdempotencyKey) -> Self {
        let mut h = Sha256::new();
        for part in [
            b"fleet-rollout".as_slice(),
            source.as_bytes(),
            key.as_str().as_bytes(),
        ] {
            h.update(part);
            h.update([0]);
        }
        Self(format!("{PREFIX}{}", base32_lower(&h.finalize()[..20])))
    }

    /// Parses an id from a URL, checking its shape.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let hash = s.strip_prefix(PREFIX).ok_or("must start with \"ro-\"")?;
        if hash.len() != 32
            || !hash
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        {
            return Err("must be \"ro-\" followed by 32 base32 characters");
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of this rollout's operation on `cluster`: the same however often, and by
    /// whichever replica, the wave holding it is published.
    pub fn operation(&self, cluster: &ClusterName) -> OperationId {
        self.attempt(cluster, 0)
    }

    /// The id of attempt `attempt` on `cluster`: 0 is the first ([`RolloutId::operation`]),
    /// each retry of the rollout's failed clusters the next.
    pub fn attempt(&self, cluster: &ClusterName, attempt: u32) -> OperationId {
        let mut h = Sha256::new();
        let attempt = attempt.to_string();
        let mut parts = vec![self.0.as_bytes(), cluster.as_str().as_bytes()];
        // Attempt 0 hashes as before retries existed: its ids do not change.
        if attempt != "0" {
            parts.push(attempt.as_bytes());
        }
        for part in parts {
            h.update(part);
            h.update([0]);
        }
        OperationId::parse(&format!("op-{}", base32_lower(&h.finalize()[..20])))
            .expect("op- and 32 base32 characters")
    }
}

impl TryFrom<String> for RolloutId {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<RolloutId> for String {
    fn from(value: RolloutId) -> Self {
        value.0
    }
}

impl fmt::Display for RolloutId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which clusters a rollout changes: those a label selector matches, or a list of names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Selection {
    /// Kubernetes label selector syntax, e.g. `env=prod,region in (eu,us)`.
    Selector(String),
    /// Registered clusters, in the order given (unless the strategy orders by a label).
    Names(Vec<String>),
}

/// A count of clusters, or a percentage of the selection (`"10%"`); written as a number or
/// a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    Count(usize),
    /// 1 to 100.
    Percent(u8),
}

impl Size {
    /// How many of `total` clusters: a percentage rounds up, so `1%` of any selection is
    /// at least one cluster.
    pub fn of(self, total: usize) -> usize {
        match self {
            Size::Count(n) => n,
            Size::Percent(p) => (total * usize::from(p)).div_ceil(100),
        }
    }

    /// How many failures of `total` clusters a budget allows: a percentage rounds down,
    /// so `10%` of 5 clusters allows none.
    pub fn budget(self, total: usize) -> usize {
        match self {
            Size::Count(n) => n,
            Size::Percent(p) => total * usize::from(p) / 100,
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(p) = text.strip_suffix('%') {
            return match p.trim().parse::<u8>() {
                Ok(p) if (1..=100).contains(&p) => Ok(Size::Percent(p)),
                _ => Err(format!("{text:?}: a percentage is 1% to 100%")),
            };
        }
        text.parse::<usize>()
            .map(Size::Count)
            .map_err(|_| format!("{text:?}: a count of clusters (\"5\") or a percentage (\"10%\")"))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Size::Count(n) => write!(f, "{n}"),
            Size::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Size::Count(n) => s.serialize_u64(*n as u64),
            Size::Percent(_) => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(n) => Ok(Size::Count(n as usize)),
            Raw::Text(t) => Size::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// How many failed clusters a rollout tolerates before it halts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FailureBudget {
    /// Failures within one wave.
    pub per_wave: Size,
    /// Failures over the whole rollout.
    pub total: Size,
}

impl Default for FailureBudget {
    fn default() -> Self {
        Self {
            per_wave: Size::Count(0),
            total: Size::Count(0),
        }
    }
}

/// Each cluster's changed objects must report ready for `soak` before its wave counts as
/// succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthGate {
    #[serde(with = "crate::duration")]
    pub soak: Duration,
}

/// How a rollout moves through its clusters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Strategy {
    /// Cumulative: by the end of wave `i`, this many of the selected clusters (a count or
    /// a percentage); the last reaches them all. `[1, "10%", "100%"]`: one cluster, then up
    /// to a tenth, then the rest.
    pub waves: Vec<Size>,
    /// Order the clusters by this label's value (clusters without it last), then by name;
    /// without it, a selector's matches go in name order and a list in its own order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_by: Option<String>,
    #[serde(default)]
    pub max_failures: FailureBudget,
    /// Between one wave's end and the next wave's start.
    #[serde(default, with = "crate::duration")]
    pub pause: Duration,
    /// The waves (numbered from 1) that wait for an approval before they start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approval_before: Vec<usize>,
    /// Operations of this rollout in flight on one cluster at once, across all workers.
    #[serde(default = "one")]
    pub concurrency: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_gate: Option<HealthGate>,
}

fn one() -> usize {
    1
}

/// The longest pause or soak a rollout may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

impl Strategy {
    /// Every problem with the strategy on its own (the selection's size is checked by
    /// [`plan`]), each naming its field under `strategy`.
    pub fn check(&self) -> Vec<FieldError> {
        let mut problems = Vec::new();
        let field = |f: &str| format!("strategy.{f}");
        if self.waves.is_empty() {
            problems.push(FieldError::new(
                field("waves"),
                "at least one wave is required",
            ));
        }
        for (i, w) in self.waves.iter().enumerate() {
            if *w == Size::Count(0) {
                problems.push(FieldError::new(
                    field(&format!("waves[{i}]")),
                    "a wave of no clusters; a count is at least 1",
                ));
            }
        }
        if let Some(last) = self.waves.last()
            && matches!(last, Size::Percent(p) if *p < 100)
        {
            problems.push(FieldError::new(
                field(&format!("waves[{}]", self.waves.len() - 1)),
                format!("the last wave must reach every selected cluster (100%), not {last}"),
            ));
        }
        for (i, gate) in self.approval_before.iter().enumerate() {
            if *gate < 1 || *gate > self.waves.len() {
                problems.push(FieldError::new(
                    field(&format!("approvalBefore[{i}]")),
                    format!(
                        "there is no wave {gate}: waves are numbered 1 to {}",
                        self.waves.len()
                    ),
                ));
            }
        }
        if self.concurrency < 1 {
            problems.push(FieldError::new(field("concurrency"), "must be at least 1"));
        }
        if let Some(key) = &self.order_by
            && let Some(reason) = crate::labels::key_problem(key)
        {
            problems.push(FieldError::new(
                field("orderBy"),
                format!("{key:?}: {reason}"),
            ));
        }
        if self.pause > MAX_WAIT {
            problems.push(FieldError::new(field("pause"), "at most 7d"));
        }
        if let Some(gate) = &self.health_gate
            && (gate.soak.is_zero() || gate.soak > MAX_WAIT)
        {
            problems.push(FieldError::new(
                field("healthGate.soak"),
                "more than 0s and at most 7d",
            ));
        }
        problems
    }
}

/// The clusters `selection` names, in rollout order: every registered cluster a selector
/// matches, or the listed ones (each must be registered, none twice), then ordered by
/// `order_by` if given. `registered` yields every registered cluster with its labels.
/// An empty result is an error: a rollout of nothing is a mistake.
pub fn resolve<'a>(
    selection: &Selection,
    order_by: Option<&str>,
    registered: impl IntoIterator<Item = (&'a ClusterName, &'a Labels)>,
) -> Result<Vec<ClusterName>, Vec<FieldError>> {
    let registered: Vec<(&ClusterName, &Labels)> = registered.into_iter().collect();
    let mut chosen: Vec<(&ClusterName, &Labels)> = match selection {
        Selection::Selector(text) => {
            let selector = Selector::parse(text)
                .map_err(|e| vec![FieldError::new("clusters.selector", e.to_string())])?;
            let mut matched: Vec<_> = registered
                .iter()
                .filter(|(_, labels)| selector.matches(labels))
                .copied()
                .collect();
            matched.sort_by(|a, b| a.0.cmp(b.0));
            matched
        }
        Selection::Names(names) => {
            let mut problems = Vec::new();
            let mut out = Vec::new();
            for (i, name) in names.iter().enumerate() {
                let field = format!("clusters.names[{i}]");
                if names[..i].contains(name) {
                    problems.push(FieldError::new(field, format!("{name:?} is listed twice")));
                    continue;
                }
                match registered.iter().find(|(n, _)| n.as_str() == name) {
                    Some(found) => out.push(*found),
                    None => problems.push(FieldError::new(
                        field,
                        format!("{name:?} is not a registered cluster"),
                    )),
                }
            }
            if !problems.is_empty() {
                return Err(problems);
            }
            out
        }
    };
    if chosen.is_empty() {
        let field = match selection {
            Selection::Selector(_) => "clusters.selector",
            Selection::Names(_) => "clusters.names",
        };
        return Err(vec![FieldError::new(
            field,
            "selects no registered cluster",
        )]);
    }
    if let Some(key) = order_by {
        // Stable: equal values keep the order they had (name order, or the list's).
        chosen.sort_by(|a, b| match (a.1.get(key), b.1.get(key)) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
    }
    Ok(chosen.into_iter().map(|(n, _)| n.clone()).collect())
}

/// Where each wave ends in the resolved list of `total` clusters: wave `i` covers
/// `ends[i - 1]..ends[i]` (from 0). Cumulative sizes beyond `total` are capped at it; a
/// wave that adds no cluster (a percentage of a small fleet) is empty and passes at once,
/// its gate still held. The last wave must reach `total`.
pub fn plan(waves: &[Size], total: usize) -> Result<Vec<usize>, FieldError> {
    let mut ends = Vec::with_capacity(waves.len());
    let mut reached = 0;
    for (i, wave) in waves.iter().enumerate() {
        let end = wave.of(total).min(total);
        if end < reached {
            return Err(FieldError::new(
                format!("strategy.waves[{i}]"),
                format!(
                    "waves are cumulative: {wave} ({end} of {total} clusters) is fewer than the {reached} reached by the wave before"
                ),
            ));
        }
        reached = end;
        ends.push(end);
    }
    if reached != total {
        return Err(FieldError::new(
            format!("strategy.waves[{}]", waves.len().saturating_sub(1)),
            format!(
                "the waves reach {reached} of the {total} selected clusters; the last must reach all (100%)"
            ),
        ));
    }
    Ok(ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> ClusterName {
        ClusterName::new(n).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        let mut l = Labels::new();
        for (k, v) in pairs {
            l.insert((*k).into(), (*v).into());
        }
        l
    }

    fn fleet() -> Vec<(ClusterName, Labels)> {
        vec![
            (name("c"), labels(&[("env", "prod"), ("ring", "2")])),
            (name("a"), labels(&[("env", "prod"), ("ring", "1")])),
            (name("b"), labels(&[("env", "staging")])),
            (name("d"), labels(&[("env", "prod")])),
        ]
    }

    fn resolved(
        selection: Selection,
        order_by: Option<&str>,
    ) -> Result<Vec<String>, Vec<FieldError>> {
        let fleet = fleet();
        resolve(&selection, order_by, fleet.iter().map(|(n, l)| (n, l)))
            .map(|v| v.into_iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn ids_are_stable_and_each_cluster_gets_its_own_operation() {
        let key = IdempotencyKey::new("deploy-42").unwrap();
        let id = RolloutId::derive("ci", &key);
        assert_eq!(id, RolloutId::derive("ci", &key));
        assert_ne!(id, RolloutId::derive("other", &key));
        assert_eq!(RolloutId::parse(id.as_str()), Ok(id.clone()));
        assert!(
            id.as_str()[3..] != OperationId::derive("ci", &key).as_str()[3..],
            "a rollout's id is not the operation id of the same key"
        );
        let (a, b) = (id.operation(&name("a")), id.operation(&name("b")));
        assert_ne!(a, b);
        assert_eq!(a, id.operation(&name("a")));
        assert!(RolloutId::parse("ro-short").is_err());
    }

    #[test]
    fn a_selector_resolves_to_its_matches_in_name_order_or_by_a_label() {
        let prod = || Selection::Selector("env=prod".into());
        assert_eq!(resolved(prod(), None).unwrap(), ["a", "c", "d"]);
        // By ring: 1, 2, then the cluster without the label.
        assert_eq!(resolved(prod(), Some("ring")).unwrap(), ["a", "c", "d"]);
        assert_eq!(
            resolved(
                Selection::Selector("env in (prod,staging)".into()),
                Some("env")
            )
            .unwrap(),
            ["a", "c", "d", "b"]
        );
    }

    #[test]
    fn a_list_keeps_its_order_and_names_every_bad_entry() {
        let list = |names: &[&str]| Selection::Names(names.iter().map(|s| s.to_string()).collect());
        assert_eq!(resolved(list(&["d", "a"]), None).unwrap(), ["d", "a"]);
        assert_eq!(
            resolved(list(&["d", "c", "a"]), Some("ring")).unwrap(),
            ["a", "c", "d"]
        );
        let problems = resolved(list(&["a", "nope", "a"]), None).unwrap_err();
        assert_eq!(
            problems
                .iter()
                .map(|p| p.field.as_str())
                .collect::<Vec<_>>(),
            ["clusters.names[1]", "clusters.names[2]"]
        );
    }

    #[test]
    fn an_empty_selection_or_a_bad_selector_is_refused_naming_the_field() {
        let empty = resolved(Selection::Selector("env=dev".into()), None).unwrap_err();
        assert_eq!(empty[0].field, "clusters.selector");
        assert!(empty[0].reason.contains("no registered cluster"));
        let bad = resolved(Selection::Selector("env==".into()), None).unwrap_err();
        assert_eq!(bad[0].field, "clusters.selector");
        assert_eq!(
            resolved(Selection::Names(vec![]), None).unwrap_err()[0].field,
            "clusters.names"
        );
    }

    #[test]
    fn waves_are_cumulative_and_must_reach_every_cluster() {
        let w = |sizes: &[&str]| -> Vec<Size> {
            sizes.iter().map(|s| Size::parse(s).unwrap()).collect()
        };
        assert_eq!(
            plan(&w(&["1", "10%", "100%"]), 2000),
            Ok(vec![1, 200, 2000])
        );
        // A percentage rounds up; a wave that adds nothing is empty.
        assert_eq!(plan(&w(&["1", "10%", "100%"]), 5), Ok(vec![1, 1, 5]));
        assert_eq!(plan(&w(&["3", "100"]), 40), Ok(vec![3, 40]));
        let short = plan(&w(&["1", "3"]), 10).unwrap_err();
        assert_eq!(short.field, "strategy.waves[1]");
        assert!(
            short.reason.contains("reach 3 of the 10"),
            "{}",
            short.reason
        );
        let backwards = plan(&w(&["50%", "2", "100%"]), 10).unwrap_err();
        assert_eq!(backwards.field, "strategy.waves[1]");
    }

    #[test]
    fn sizes_read_as_numbers_or_percentages_and_say_what_is_wrong() {
        let parse = |j: &str| serde_json::from_str::<Vec<Size>>(j);
        assert_eq!(
            parse(r#"[1, "10%", "100%", "7"]"#).unwrap(),
            [
                Size::Count(1),
                Size::Percent(10),
                Size::Percent(100),
                Size::Count(7)
            ]
        );
        for bad in [r#"["0%"]"#, r#"["101%"]"#, r#"["ten"]"#] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::to_string(&[Size::Count(1), Size::Percent(10)]).unwrap(),
            r#"[1,"10%"]"#
        );
    }

    #[test]
    fn a_strategy_names_each_problem() {
        let strategy: Strategy = serde_json::from_value(serde_json::json!({
            "waves": [0, "50%"],
            "approvalBefore": [3],
            "concurrency": 0,
            "orderBy": "not a key!",
            "healthGate": {"soak": "0s"},
        }))
        .unwrap();
        let fields: Vec<String> = strategy.check().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "strategy.waves[0]",
                "strategy.waves[1]",
                "strategy.approvalBefore[0]",
                "strategy.concurrency",
                "strategy.orderBy",
                "strategy.healthGate.soak"
            ]
        );
        let fine: Strategy =
            serde_json::from_value(serde_json::json!({"waves": [1, "10%", "100%"]})).unwrap();
        assert!(fine.check().is_empty());
        assert_eq!(fine.concurrency, 1);
        assert_eq!(fine.max_failures, FailureBudget::default());
    }
}
