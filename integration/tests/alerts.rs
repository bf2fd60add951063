//! The alerting rules shipped in `deploy/observability/`, checked with Prometheus's own
//! tools: `promtool check rules`, the unit tests in `alert-rules.test.yaml` (`promtool test
//! rules`: series in, alerts out), a case that fires and one that does not for every alert,
//! the PrometheusRule holding the same groups as the plain rule file, and a runbook section
//! for each alert in `docs/observability.md`.

use std::{collections::BTreeMap, path::PathBuf};

use longshore_integration::prometheus::{promtool, tool};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn observability() -> PathBuf {
    root().join("deploy/observability")
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(observability().join(path)).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every alert of the plain rule file, by name.
fn alerts() -> BTreeMap<String, Value> {
    yaml("alert-rules.yaml")["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .filter_map(|r| Some((r["alert"].as_str()?.to_owned(), r)))
        .collect()
}

#[test]
fn the_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool_bin) = tool("promtool") else {
        return;
    };
    let dir = observability();
    let checked = promtool(
        &promtool_bin,
        &dir,
        &["check", "rules", "alert-rules.yaml"],
        None,
    )
    .unwrap();
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(
        &promtool_bin,
        &dir,
        &["test", "rules", "alert-rules.test.yaml"],
        None,
    )
    .unwrap();
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn the_unit_tests_catch_a_rule_that_no_longer_fires() {
    let Some(promtool_bin) = tool("promtool") else {
        return;
    };
    // The same tests against rules whose thresholds no series reaches: they must fail,
    // or they test nothing.
    let dir = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string(observability().join("alert-rules.yaml")).unwrap();
    let broken = rules
        .replace(" > 0\n", " > 1e9\n")
        .replace(" > 300", " > 1e9");
    assert_ne!(broken, rules);
    std::fs::write(dir.path().join("alert-rules.yaml"), broken).unwrap();
    std::fs::copy(
        observability().join("alert-rules.test.yaml"),
        dir.path().join("alert-rules.test.yaml"),
    )
    .unwrap();
    let err = promtool(
        &promtool_bin,
        dir.path(),
        &["test", "rules", "alert-rules.test.yaml"],
        None,
    )
    .unwrap_err()
    .to_string();
    for alert in [
        "LongshoreNoWorkerPulling",
        "LongshoreDeadLetters",
        "LongshorePublishFailing",
        "LongshoreDispatcherUnavailable",
        "LongshoreClusterUnreachable",
        "LongshoreClusterUnserved",
        "LongshoreRolloutHalted",
    ] {
        assert!(err.contains(alert), "{alert} not caught:\n{err}");
    }
}

#[test]
fn every_alert_has_a_case_that_fires_it_and_one_that_does_not() {
    let tests = yaml("alert-rules.test.yaml");
    let mut fires = BTreeMap::<String, bool>::new();
    let mut quiet = BTreeMap::<String, bool>::new();
    for case in tests["tests"].as_array().unwrap() {
        for check in case["alert_rule_test"].as_array().unwrap() {
            let name = check["alertname"].as_str().unwrap().to_owned();
            let expected = check["exp_alerts"].as_array().map_or(0, Vec::len);
            if expected > 0 {
                fires.insert(name, true);
            } else {
                quiet.insert(name, true);
            }
        }
    }
    for name in alerts().keys() {
        assert!(fires.contains_key(name), "no case fires {name}");
        assert!(quiet.contains_key(name), "no case where {name} stays quiet");
    }
}

#[test]
fn every_alert_has_a_summary_a_description_and_a_runbook_section() {
    let runbook = std::fs::read_to_string(root().join("docs/observability.md")).unwrap();
    for (name, rule) in alerts() {
        let annotations = &rule["annotations"];
        for key in ["summary", "description"] {
            assert!(
                annotations[key].as_str().is_some_and(|s| s.len() > 10),
                "{name} has no {key}"
            );
        }
        let anchor = format!("docs/observability.md#{}", name.to_ascii_lowercase());
        assert_eq!(annotations["runbook"].as_str(), Some(anchor.as_str()));
        let section = format!("\n### {name}\n");
        let at = runbook
            .find(&section)
            .unwrap_or_else(|| panic!("docs/observability.md has no section {section:?}"));
        let body = &runbook[at + section.len()..];
        let body = &body[..body.find("\n### ").unwrap_or(body.len())];
        for part in ["**Means:**", "**Check:**", "**Do:**"] {
            assert!(body.contains(part), "{name}'s runbook has no {part}");
        }
    }
}

#[test]
fn the_prometheus_rule_holds_the_same_groups_as_the_rule_file() {
    let plain = yaml("alert-rules.yaml");
    let operator = yaml("prometheus-rule.yaml");
    assert_eq!(operator["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(operator["kind"], "PrometheusRule");
    assert_eq!(operator["metadata"]["namespace"], "longshore");
    assert_eq!(operator["spec"]["groups"], plain["groups"]);
    assert!(alerts().len() >= 7);
}
