//! Property tests over everything that reads untrusted bytes: request bodies
//! (`request::parse`), webhook payload mappings, and work-queue envelopes
//! (`Envelope::from_message`). Garbage must give a 4xx-class error, never a panic.
//! The case count is bounded so this runs with the normal test suite.

use std::collections::BTreeSet;

use longshore_contract::{ClusterName, Envelope};
use longshore_dispatcher::{error::Error, hooks::mapping::MappingConfig, request};
use proptest::prelude::*;
use serde_json::{Value, json};

fn clusters() -> BTreeSet<ClusterName> {
    [ClusterName::new("prod").unwrap()].into_iter().collect()
}

/// Client errors are everything except the server-side ones.
fn is_client_error(e: &Error) -> bool {
    !matches!(e, Error::Unavailable(_) | Error::Timeout(_))
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "prod",
            "apply",
            "delete",
            "v1",
            "ConfigMap",
            "kind: X\n---\na: b"
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "cluster",
                    "action",
                    "manifests",
                    "targets",
                    "patch",
                    "options",
                    "pipeline",
                    "idempotencyKey",
                    "apiVersion",
                    "kind",
                    "metadata",
                    "name",
                    "namespace",
                    "dryRun",
                    "type",
                    "body",
                    "x",
                ])
                .prop_map(String::from),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_refused_cleanly(body in prop::collection::vec(any::<u8>(), 0..512),
                                           key in proptest::option::of(".{0,300}")) {
        if let Err(e) = request::parse(&body, key.as_deref(), &clusters()) {
            prop_assert!(is_client_error(&e), "{e:?}");
        }
    }

    #[test]
    fn arbitrary_json_is_accepted_or_refused_cleanly(v in json_value()) {
        let body = v.to_string();
        if let Err(e) = request::parse(body.as_bytes(), None, &clusters()) {
            prop_assert!(is_client_error(&e), "{e:?}");
        }
    }

    #[test]
    fn arbitrary_yaml_manifests_are_refused_cleanly(yaml in "[a-z:&*\\[\\]{}\\-\\n !|>'\"0-9#%@`,?]{0,200}") {
        let body = json!({"cluster": "prod", "action": "apply", "manifests": yaml}).to_string();
        if let Err(e) = request::parse(body.as_bytes(), None, &clusters()) {
            prop_assert!(is_client_error(&e), "{e:?}");
        }
    }

    #[test]
    fn mappings_of_arbitrary_payloads_are_refused_cleanly(v in json_value()) {
        let map = MappingConfig {
            cluster: Some("/cluster".into()),
            action: Some("/action".into()),
            manifests: Some("/manifests".into()),
            attempt: Some("/metadata/x".into()),
            dry_run: Some("/kind".into()),
            ..Default::default()
        };
        if let Ok(submission) = map.apply(&v) {
            let body = submission.to_string();
            if let Err(e) = request::parse(body.as_bytes(), None, &clusters()) {
                prop_assert!(is_client_error(&e), "{e:?}");
            }
        }
    }

    #[test]
    fn arbitrary_envelopes_never_panic(payload in prop::collection::vec(any::<u8>(), 0..512),
                                       v in json_value(),
                                       schema in proptest::option::of("[0-9a-z]{0,3}")) {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(schema) = &schema {
            headers.insert(longshore_contract::envelope::SCHEMA_HEADER, schema.as_str());
        }
        let _ = Envelope::from_message(Some(&headers), &payload);
        let _ = Envelope::from_message(None, v.to_string().as_bytes());
    }
}
