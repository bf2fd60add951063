//! The store against a real nats-server.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use longshore_testkit::nats::NatsServer;
use serde::{Deserialize, Serialize};

use super::*;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Counter {
    n: u64,
}

async fn bucket(nats: &NatsServer) -> Store<Counter> {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let kv = js
        .create_key_value(kv::Config {
            bucket: "TEST".into(),
            history: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    Store::new(kv, "TEST")
}

/// A bucket whose keys may carry their own TTL, and a store that writes them.
async fn ttl_bucket(nats: &NatsServer, name: &'static str) -> Store<Counter> {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let kv = js
        .create_key_value(kv::Config {
            bucket: name.into(),
            history: 1,
            limit_markers: Some(Duration::from_secs(1)),
            ..Default::default()
        })
        .await
        .unwrap();
    Store::new(kv, name).with_ttl_writes(js, "$JS.API".into())
}

fn bump(current: Option<&Counter>) -> Result<Change<Counter>, StoreError> {
    Ok(Change::Write(Counter {
        n: current.map_or(0, |c| c.n) + 1,
    }))
}

#[tokio::test]
async fn values_are_created_once_and_read_with_their_revision() {
    let nats = NatsServer::start().await.unwrap();
    let store = bucket(&nats).await;
    assert_eq!(store.read("a").await.unwrap(), None);
    let revision = store.create("a", &Counter { n: 1 }).await.unwrap();
    assert_eq!(
        store.read("a").await.unwrap(),
        Some(Versioned {
            value: Counter { n: 1 },
            revision
        })
    );
    let again = store.create("a", &Counter { n: 2 }).await.unwrap_err();
    assert_eq!(again.kind(), StoreErrorKind::AlreadyExists, "{again}");
    assert_eq!(again.key(), "a");
    assert_eq!(store.read("a").await.unwrap().unwrap().value.n, 1);
}

#[tokio::test]
async fn deleted_and_purged_keys_read_as_absent_and_can_be_written_again() {
    let nats = NatsServer::start().await.unwrap();
    let store = bucket(&nats).await;
    let revision = store.create("a", &Counter { n: 1 }).await.unwrap();
    let stale = store.delete_if("a", revision + 10).await.unwrap_err();
    assert_eq!(stale.kind(), StoreErrorKind::Changed, "{stale}");
    store.delete_if("a", revision).await.unwrap();
    assert_eq!(store.read("a").await.unwrap(), None);
    // Over the deletion marker, by modify and by create.
    let written = store.modify("a", None, bump).await.unwrap().written();
    assert_eq!(written.map(|v| v.value.n), Some(1));
    store.bucket().purge("a").await.unwrap();
    assert_eq!(store.read("a").await.unwrap(), None);
    store.create("a", &Counter { n: 7 }).await.unwrap();
    assert_eq!(store.read("a").await.unwrap().unwrap().value.n, 7);
}

#[tokio::test]
async fn concurrent_modifications_each_land_once_or_say_they_did_not() {
    let nats = NatsServer::start().await.unwrap();
    let store = bucket(&nats).await;
    // Four writers on one key: every modification that reports success is in the value
    // exactly once (no update lost to a race, none applied twice), and one that lost every
    // race says so.
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut landed = 0u64;
                for _ in 0..10 {
                    match store.modify("n", None, bump).await {
                        Ok(_) => landed += 1,
                        Err(e) => assert_eq!(e.kind(), StoreErrorKind::Contended, "{e}"),
                    }
                }
                landed
            })
        })
        .collect();
    let mut landed = 0;
    for w in writers {
        landed += w.await.unwrap();
    }
    assert!(
        landed >= 20,
        "backing off after a conflict lets most land: {landed}"
    );
    assert_eq!(store.read("n").await.unwrap().unwrap().value.n, landed);
}

#[tokio::test]
async fn a_stale_known_value_costs_a_read_not_a_lost_update() {
    let nats = NatsServer::start().await.unwrap();
    let store = bucket(&nats).await;
    let first = store
        .modify("n", None, bump)
        .await
        .unwrap()
        .written()
        .unwrap();
    store.modify("n", None, bump).await.unwrap();
    // Starting from the first value: the compare-and-set fails, the store reads again.
    let third = store
        .modify("n", Some(first), bump)
        .await
        .unwrap()
        .written()
        .unwrap();
    assert_eq!(third.value.n, 3);
}

#[tokio::test]
async fn the_closure_keeps_deletes_or_refuses() {
    let nats = NatsServer::start().await.unwrap();
    let store = bucket(&nats).await;
    let kept = store
        .modify("n", None, |_| Ok::<_, StoreError>(Change::Keep))
        .await
        .unwrap();
    assert_eq!(kept, Modified::Kept(None));
    store.create("n", &Counter { n: 5 }).await.unwrap();
    let kept = store
        .modify("n", None, |_| Ok::<_, StoreError>(Change::Keep))
        .await
        .unwrap();
    assert!(matches!(kept, Modified::Kept(Some(v)) if v.value.n == 5));

    #[derive(Debug, PartialEq)]
    enum Refused {
        TooBig(u64),
        Store(StoreErrorKind),
    }
    impl From<StoreError> for Refused {
        fn from(e: StoreError) -> Self {
            Refused::Store(e.kind())
        }
    }
    let refused = store
        .modify("n", None, |c| match c {
            Some(c) if c.n > 3 => Err(Refused::TooBig(c.n)),
            _ => Ok(Change::Keep),
        })
        .await
        .unwrap_err();
    assert_eq!(refused, Refused::TooBig(5));

    let deleted = store
        .modify("n", None, |_| Ok::<_, StoreError>(Change::Delete))
        .await
        .unwrap();
    assert_eq!(deleted, Modified::Deleted);
    assert_eq!(store.read("n").await.unwrap(), None);
}

#[tokio::test]
async fn an_unreadable_value_is_named_not_taken_for_absent() {
    let nats = NatsServer::start().await.unwrap();
    let store = bucket(&nats).await;
    store.bucket().put("n", "not json".into()).await.unwrap();
    let err = store.read("n").await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unreadable);
    assert!(
        err.to_string().starts_with("TEST n: unreadable value"),
        "{err}"
    );
    let err = store.modify("n", None, bump).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unreadable);
}

#[tokio::test]
async fn a_watch_starts_with_the_value_and_follows_it() {
    let nats = NatsServer::start().await.unwrap();
    let store = bucket(&nats).await;
    store.create("n", &Counter { n: 1 }).await.unwrap();
    let mut watch = Box::pin(store.watch("n").await.unwrap());
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("a change within 5s")
            .expect("the watch goes on")
            .expect("readable")
            .map(|v| v.value.n)
    };
    assert_eq!(next().await, Some(1));
    store.modify("n", None, bump).await.unwrap();
    assert_eq!(next().await, Some(2));
    store
        .modify("n", None, |_| Ok::<_, StoreError>(Change::Delete))
        .await
        .unwrap();
    assert_eq!(next().await, None);
}

#[tokio::test]
async fn seeding_creates_what_is_missing_but_not_what_was_removed() {
    let nats = NatsServer::start().await.unwrap();
    let store = bucket(&nats).await;
    assert_eq!(
        store.seed("a", &Counter { n: 1 }).await.unwrap(),
        Seeded::Created
    );
    assert_eq!(
        store.seed("a", &Counter { n: 2 }).await.unwrap(),
        Seeded::Exists
    );
    assert_eq!(store.read("a").await.unwrap().unwrap().value.n, 1);
    let revision = store.read("a").await.unwrap().unwrap().revision;
    store.delete_if("a", revision).await.unwrap();
    assert_eq!(
        store.seed("a", &Counter { n: 3 }).await.unwrap(),
        Seeded::Removed
    );
    assert_eq!(store.read("a").await.unwrap(), None);
}

#[tokio::test]
async fn a_key_written_with_a_ttl_expires_unless_renewed() {
    let nats = NatsServer::start().await.unwrap();
    let store = ttl_bucket(&nats, "LIVE").await;
    store
        .put_with_ttl("hb", &Counter { n: 1 }, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(store.read("hb").await.unwrap().unwrap().value.n, 1);
    let watch = store.watch("hb").await.unwrap();
    tokio::pin!(watch);
    // The value, then its expiry (the server's marker), within a bounded wait.
    let first = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.map(|v| v.value.n), Some(1));
    let expired = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the key expires within its TTL and the server's sweep")
        .unwrap()
        .unwrap();
    assert_eq!(expired, None);
    assert_eq!(store.read("hb").await.unwrap(), None);
    let unset: Store<Counter> = bucket(&nats).await;
    let err = unset
        .put_with_ttl("x", &Counter { n: 1 }, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unavailable);
}

#[tokio::test]
async fn a_ttl_write_if_lets_one_claimant_in_and_only_it_renew() {
    let nats = NatsServer::start().await.unwrap();
    let store = ttl_bucket(&nats, "LEASES").await;
    let ttl = Duration::from_secs(1);

    // Two claim a free key at once: one wins, the other is told it changed.
    let (a, b) = futures::join!(
        store.write_with_ttl_if("k", &Counter { n: 1 }, ttl, None),
        store.write_with_ttl_if("k", &Counter { n: 2 }, ttl, None),
    );
    let (won, lost) = match (a, b) {
        (Ok(rev), Err(e)) | (Err(e), Ok(rev)) => (rev, e),
        other => panic!("exactly one claim must win: {other:?}"),
    };
    assert_eq!(lost.kind(), StoreErrorKind::Changed);
    let held = store.read("k").await.unwrap().unwrap();
    assert_eq!(held.revision, won);

    // The holder renews at its revision; a stale revision is refused.
    let renewed = store
        .write_with_ttl_if("k", &held.value, ttl, Some(won))
        .await
        .unwrap();
    assert!(renewed > won);
    let stale = store
        .write_with_ttl_if("k", &Counter { n: 9 }, ttl, Some(won))
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), StoreErrorKind::Changed);
    let taken = store
        .write_with_ttl_if("k", &Counter { n: 9 }, ttl, None)
        .await
        .unwrap_err();
    assert_eq!(taken.kind(), StoreErrorKind::Changed, "held, so not free");

    // Released (deleted at its revision), it is free again.
    store.delete_if("k", renewed).await.unwrap();
    let again = store
        .write_with_ttl_if("k", &Counter { n: 3 }, ttl, None)
        .await
        .unwrap();

    // Not renewed, it expires, and is free again.
    let free = longshore_testkit::wait::eventually(
        Duration::from_secs(10),
        "the claim to expire",
        || async { store.read("k").await.unwrap().is_none().then_some(()) },
    )
    .await;
    assert!(free.is_ok());
    let after = store
        .write_with_ttl_if("k", &Counter { n: 4 }, ttl, None)
        .await
        .unwrap();
    assert!(after > again);
    assert_eq!(store.read("k").await.unwrap().unwrap().value.n, 4);
}

#[tokio::test]
async fn a_scan_returns_the_live_values_under_a_prefix_in_key_order() {
    let nats = NatsServer::start().await.unwrap();
    let store = bucket(&nats).await;
    assert!(store.scan("a.>").await.unwrap().is_empty(), "empty bucket");
    for (key, n) in [("a.y", 1), ("b.x", 2), ("a.x", 3), ("a.z", 4)] {
        store.create(key, &Counter { n }).await.unwrap();
    }
    // A later write wins; a deleted key is left out.
    let z = store.read("a.y").await.unwrap().unwrap();
    store
        .modify("a.y", Some(z), |_| {
            Ok::<_, StoreError>(Change::Write(Counter { n: 9 }))
        })
        .await
        .unwrap();
    let gone = store.read("a.z").await.unwrap().unwrap();
    store.delete_if("a.z", gone.revision).await.unwrap();
    let found: Vec<(String, u64)> = store
        .scan("a.>")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.value.n))
        .collect();
    assert_eq!(found, vec![("a.x".into(), 3), ("a.y".into(), 9)]);
    assert!(store.scan("c.>").await.unwrap().is_empty(), "no match");
}
