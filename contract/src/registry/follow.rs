//! A bucket followed live: every key's value in memory, kept current by a KV watch, so
//! replicas answer from memory (no read per request) and see a change within
//! milliseconds of its write. A watch that fails is opened again (with backoff) and the
//! copy rebuilt from the bucket, so nothing missed while it was down stays wrong.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

const REWATCH: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// The live copy of a bucket of `T`s, by key, in key order. Values are shared (`Arc`), so
/// reading a large one (a pool's list of credentials) copies nothing.
pub struct Follower<T> {
    values: Arc<RwLock<BTreeMap<String, Arc<T>>>>,
    /// Bumped on every change applied; `0` until the first full load.
    version: watch::Receiver<u64>,
}

impl<T> Clone for Follower<T> {
    fn clone(&self) -> Self {
        Self {
            values: self.values.clone(),
            version: self.version.clone(),
        }
    }
}

impl<T: DeserializeOwned + Clone + Send + Sync + 'static> Follower<T> {
    /// Starts following `kv` (named `bucket` in logs) until `stop` is cancelled.
    pub fn start(kv: kv::Store, bucket: &'static str, stop: CancellationToken) -> Self {
        let values = Arc::new(RwLock::new(BTreeMap::new()));
        let (tx, version) = watch::channel(0);
        tokio::spawn(follow(kv, bucket, values.clone(), tx, stop));
        Self { values, version }
    }

    /// Whether the bucket has been read in full at least once.
    pub fn is_loaded(&self) -> bool {
        *self.version.borrow() > 0
    }

    /// Waits until the bucket has been read in full once.
    pub async fn loaded(&self) {
        let mut version = self.version.clone();
        let _ = version.wait_for(|v| *v > 0).await;
    }

    /// Waits for the next change after `seen` (a value of [`Follower::version`]).
    pub async fn changed_since(&self, seen: u64) -> u64 {
        let mut version = self.version.clone();
        match version.wait_for(|v| *v > seen).await {
            Ok(v) => *v,
            Err(_) => seen,
        }
    }

    /// How many changes have been applied (a cursor for [`Follower::changed_since`]).
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        self.read().get(key).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Calls `f` on the values whose keys come after `after` (all, for `None`), in key
    /// order, while it returns `true`.
    pub fn scan(&self, after: Option<&str>, mut f: impl FnMut(&str, &T) -> bool) {
        let values = self.read();
        let range = match after {
            Some(after) => values
                .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => {
                values.range::<str, _>((std::ops::Bound::Unbounded, std::ops::Bound::Unbounded))
            }
        };
        for (k, v) in range {
            if !f(k, v) {
                break;
            }
        }
    }

    /// The values whose keys start with `prefix`.
    pub fn with_prefix(&self, prefix: &str) -> Vec<T> {
        self.read()
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| T::clone(v))
            .collect()
    }

    /// How many keys start with `prefix`.
    pub fn count_prefix(&self, prefix: &str) -> usize {
        self.read()
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .count()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<T>>> {
        self.values.read().unwrap_or_else(|e| e.into_inner())
    }
}

async fn follow<T: DeserializeOwned + Send + Sync + 'static>(
    kv: kv::Store,
    bucket: &'static str,
    values: Arc<RwLock<BTreeMap<String, Arc<T>>>>,
    version: watch::Sender<u64>,
    stop: CancellationToken,
) {
    let mut retries = REWATCH.retries();
    loop {
        let watched = tokio::select! {
            watched = watch_once(&kv, bucket, &values, &version) => watched,
            () = stop.cancelled() => return,
        };
        if let Err(e) = watched {
            let pause = retries.next_delay();
            tracing::warn!(bucket, error = %e, retry_in = ?pause, "watch ended; reading the bucket again");
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => return,
            }
        } else {
            retries.reset();
        }
    }
}

/// One watch, from a full read (the last value of every key) to its end. Until the full
/// read is done, changes go into a fresh copy that then replaces the old one at once.
async fn watch_once<T: DeserializeOwned>(
    kv: &kv::Store,
    bucket: &'static str,
    values: &RwLock<BTreeMap<String, Arc<T>>>,
    version: &watch::Sender<u64>,
) -> Result<(), String> {
    let mut watch = kv
        .watch_with_history(">")
        .await
        .map_err(|e| format!("watching {bucket}: {e}"))?;
    // An empty bucket sends nothing to the watch: ask how many messages it holds now.
    let mut stream = kv.stream.clone();
    let empty = stream
        .info()
        .await
        .map_err(|e| format!("reading {bucket}: {e}"))?
        .state
        .messages
        == 0;
    let mut fresh = Some(BTreeMap::new());
    if empty {
        swap_in(values, fresh.take(), version);
    }
    while let Some(entry) = watch.next().await {
        let entry = entry.map_err(|e| format!("watching {bucket}: {e}"))?;
        let value = match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<T>(&entry.value) {
                Ok(v) => Some(Arc::new(v)),
                Err(e) => {
                    // Skipped, not fatal: one bad value must not blind a replica to the rest.
                    tracing::warn!(bucket, key = %entry.key, error = %e, "unreadable value; ignoring it");
                    None
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        match fresh.as_mut() {
            Some(map) => {
                apply(map, entry.key, value);
                if entry.delta == 0 {
                    swap_in(values, fresh.take(), version);
                }
            }
            None => {
                apply(
                    &mut values.write().unwrap_or_else(|e| e.into_inner()),
                    entry.key,
                    value,
                );
                version.send_modify(|v| *v += 1);
            }
        }
    }
    Err(format!("the watch of {bucket} ended"))
}

fn apply<T>(map: &mut BTreeMap<String, T>, key: String, value: Option<T>) {
    match value {
        Some(v) => {
            map.insert(key, v);
        }
        None => {
            map.remove(&key);
        }
    }
}

fn swap_in<T>(
    values: &RwLock<BTreeMap<String, Arc<T>>>,
    fresh: Option<BTreeMap<String, Arc<T>>>,
    version: &watch::Sender<u64>,
) {
    if let Some(fresh) = fresh {
        *values.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        version.send_modify(|v| *v += 1);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_nats::jetstream;
    use longshore_testkit::nats::NatsServer;

    use super::*;

    async fn bucket(nats: &NatsServer) -> kv::Store {
        let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        js.create_key_value(kv::Config {
            bucket: "FOLLOWED".into(),
            history: 1,
            ..Default::default()
        })
        .await
        .unwrap()
    }

    async fn until<T: DeserializeOwned + Clone + Send + Sync + 'static>(
        f: &Follower<T>,
        check: impl Fn(&Follower<T>) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !check(f) {
            let seen = f.version();
            tokio::time::timeout_at(deadline, f.changed_since(seen))
                .await
                .expect("the follower caught up within 5s");
        }
    }

    #[tokio::test]
    async fn an_empty_bucket_is_loaded_at_once_and_changes_follow() {
        let nats = NatsServer::start().await.unwrap();
        let kv = bucket(&nats).await;
        let f: Follower<u32> = Follower::start(kv.clone(), "FOLLOWED", CancellationToken::new());
        tokio::time::timeout(Duration::from_secs(5), f.loaded())
            .await
            .unwrap();
        assert!(f.is_empty());
        kv.put("a", "1".into()).await.unwrap();
        until(&f, |f| f.get("a").as_deref() == Some(&1)).await;
        kv.put("a", "2".into()).await.unwrap();
        until(&f, |f| f.get("a").as_deref() == Some(&2)).await;
        kv.delete("a").await.unwrap();
        until(&f, |f| f.get("a").is_none()).await;
    }

    #[tokio::test]
    async fn an_existing_bucket_is_read_in_full_before_it_counts_as_loaded() {
        let nats = NatsServer::start().await.unwrap();
        let kv = bucket(&nats).await;
        for i in 0..500u32 {
            kv.put(format!("k{i:04}"), i.to_string().into())
                .await
                .unwrap();
        }
        kv.delete("k0007").await.unwrap();
        kv.put("bad", "not a number".into()).await.unwrap();
        let f: Follower<u32> = Follower::start(kv.clone(), "FOLLOWED", CancellationToken::new());
        tokio::time::timeout(Duration::from_secs(5), f.loaded())
            .await
            .unwrap();
        assert_eq!(
            f.len(),
            499,
            "every value but the deleted and the unreadable one"
        );
        assert_eq!(f.get("k0499").as_deref(), Some(&499));
        let mut page = Vec::new();
        f.scan(Some("k0100"), |k, _| {
            page.push(k.to_owned());
            page.len() < 3
        });
        assert_eq!(page, ["k0101", "k0102", "k0103"]);
        assert_eq!(f.with_prefix("k001").len(), 10);
    }
}
