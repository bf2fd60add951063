//! Watch through kube 5: ADDED/MODIFIED/DELETED, resuming from a resourceVersion,
//! 410 Expired after compaction, bookmarks and selector filtering.

mod common;

use common::{WAIT, client, start};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

fn cm(name: &str, app: &str) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.into());
    c.metadata.labels = Some([("app".to_string(), app.to_string())].into());
    c
}

#[tokio::test]
async fn watch_sees_changes_and_resumes() {
    let sim = start(&["prod"]).await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&sim, "prod").await, "default");
    let start_rv = cms
        .list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().labels("app=web"), &start_rv)
        .await
        .unwrap()
        .boxed();

    cms.create(&PostParams::default(), &cm("a", "web"))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("other", "db"))
        .await
        .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap();
    cms.delete("a", &DeleteParams::default()).await.unwrap();

    let mut seen = Vec::new();
    let mut last_rv = String::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(WAIT, stream.try_next())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        match ev {
            WatchEvent::Added(c) => seen.push(("ADDED", c.name_any(), c.resource_version())),
            WatchEvent::Modified(c) => seen.push(("MODIFIED", c.name_any(), c.resource_version())),
            WatchEvent::Deleted(c) => seen.push(("DELETED", c.name_any(), c.resource_version())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
        if let Some((_, _, Some(rv))) = seen.last() {
            last_rv = rv.clone();
        }
    }
    let kinds: Vec<_> = seen.iter().map(|(k, n, _)| (*k, n.as_str())).collect();
    assert_eq!(
        kinds,
        [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")],
        "selector filters out 'other'"
    );

    // Resume from the MODIFIED event: only the DELETED follows.
    let modified_rv = seen[1].2.clone().unwrap();
    let mut resumed = cms
        .watch(
            &WatchParams::default().labels("app=web").timeout(1),
            &modified_rv,
        )
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(WAIT, resumed.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(ev, WatchEvent::Deleted(ref c) if c.resource_version().as_deref() == Some(last_rv.as_str()))
    );
    // timeoutSeconds ends the stream.
    let rest: Vec<_> = tokio::time::timeout(WAIT, resumed.collect::<Vec<_>>())
        .await
        .expect("watch ends");
    assert!(
        rest.iter()
            .all(|e| matches!(e, Ok(WatchEvent::Bookmark(_))))
    );
}

#[tokio::test]
async fn compacted_history_gives_410_expired() {
    let sim = start(&["prod"]).await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&sim, "prod").await, "default");
    let old_rv = cms
        .list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    cms.create(&PostParams::default(), &cm("a", "web"))
        .await
        .unwrap();
    sim.cluster("prod").unwrap().compact();
    let mut stream = cms
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match ev {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn expiring_the_watches_ends_open_ones_with_410_and_refuses_resuming() {
    let sim = start(&["prod"]).await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&sim, "prod").await, "default");
    let before = cms
        .list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    cms.create(&PostParams::default(), &cm("a", "web"))
        .await
        .unwrap();
    let rv = cms
        .list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut open = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    // The watch is subscribed before its response starts: nothing to wait for.
    let cluster = sim.cluster("prod").unwrap();
    assert_eq!(cluster.open_watches(), 1);
    cluster.expire_watches();
    let first = tokio::time::timeout(WAIT, open.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(first, WatchEvent::Error(ref e) if e.code == 410),
        "the open watch ends with 410, got {first:?}"
    );
    // Resuming from a version older than the expiry: refused.
    let mut resumed = cms
        .watch(&WatchParams::default(), &before)
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(WAIT, resumed.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(ev, WatchEvent::Error(ref e) if e.code == 410),
        "{ev:?}"
    );
}

#[tokio::test]
async fn initial_events_end_with_a_bookmark() {
    let sim = start(&["prod"]).await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&sim, "prod").await, "default");
    cms.create(&PostParams::default(), &cm("a", "web"))
        .await
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().initial_events(), "")
        .await
        .unwrap()
        .boxed();
    let first = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(first, WatchEvent::Added(ref c) if c.name_any() == "a"));
    let second = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match second {
        WatchEvent::Bookmark(b) => assert_eq!(
            b.metadata
                .annotations
                .get("k8s.io/initial-events-end")
                .map(String::as_str),
            Some("true")
        ),
        other => panic!("expected a bookmark, got {other:?}"),
    }
}
