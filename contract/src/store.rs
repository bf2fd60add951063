//! One typed compare-and-set store over a JetStream KV bucket, which every piece of shared
//! state goes through: status records, object fences, and what the fleet adds. The rules
//! that keep the guarantees are written once, here:
//!
//! - a value is read with its revision, and only a `Put` counts: a deleted or purged key
//!   reads as absent ([`Store::read`]);
//! - [`Store::create`] writes a value only where there is none;
//! - [`Store::modify`] reads, asks a closure what to do with the value as it is (keep it,
//!   write another, delete it), and writes with compare-and-set; when another writer got
//!   there first it waits a moment (jittered), reads again and asks again, a bounded
//!   number of times;
//! - errors are typed ([`StoreError`], matched with [`StoreError::kind`]).
//!
//! ```no_run
//! # async fn example(kv: async_nats::jetstream::kv::Store) -> Result<(), longshore_contract::store::StoreError> {
//! use longshore_contract::store::{Change, Store};
//! let counters: Store<u64> = Store::new(kv, "COUNTERS");
//! counters
//!     .modify("visits", None, |n| Ok::<_, longshore_contract::store::StoreError>(
//!         Change::Write(n.copied().unwrap_or(0) + 1),
//!     ))
//!     .await?;
//! # Ok(())
//! # }
//! ```

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::{Stream, StreamExt};
use serde::{Serialize, de::DeserializeOwned};

use crate::backoff::Backoff;

/// Compare-and-set attempts before [`Store::modify`] gives up on a value other writers keep
/// changing.
pub const ATTEMPTS: usize = 5;

/// The pause after losing a compare-and-set race, so writers that collided spread out
/// rather than collide again.
const CONFLICT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(2), Duration::from_millis(50));

/// How long [`Store::scan`] waits for the next entry before it gives up.
const SCAN_IDLE: Duration = Duration::from_secs(5);

/// A value and the revision it was read or written at.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub revision: u64,
}

/// What [`Store::recent`] read.
#[derive(Debug)]
pub struct Recent<T> {
    /// Keys and their values, in revision order.
    pub entries: Vec<(String, Versioned<T>)>,
    /// The newest revision the bucket had when read: changes after it are new.
    pub last_revision: u64,
    /// More entries were written in the window than were read (the oldest left out).
    pub truncated: bool,
}

/// One change [`Store::changes_after`] follows.
#[derive(Debug)]
pub struct KeyChange<T> {
    pub key: String,
    pub revision: u64,
    /// The value written; `None` when the key was deleted.
    pub value: Option<T>,
}

/// What a [`Store::modify`] closure decides, given the value as it is.
#[derive(Debug)]
pub enum Change<T> {
    /// Leave it as it is.
    Keep,
    /// Write this instead (create it, if there was none).
    Write(T),
    /// Remove it (a no-op if there was none).
    Delete,
}

/// What [`Store::modify`] did.
#[derive(Debug, PartialEq)]
pub enum Modified<T> {
    /// The closure kept the value: here it is as it was (absent: none).
    Kept(Option<Versioned<T>>),
    /// The value written, and its revision.
    Written(Versioned<T>),
    Deleted,
}

impl<T> Modified<T> {
    /// The value written, if one was.
    pub fn written(self) -> Option<Versioned<T>> {
        match self {
            Modified::Written(v) => Some(v),
            _ => None,
        }
    }
}

/// What went wrong, for callers to match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The bucket did not answer, or refused the request: worth trying again later.
    Unavailable,
    /// [`Store::create`]: the key already has a value.
    AlreadyExists,
    /// [`Store::delete_if`]: the value is no longer at the revision given.
    Changed,
    /// Other writers changed the value on every attempt.
    Contended,
    /// The stored value is not a `T`.
    Unreadable,
}

/// A failed store request, naming the bucket and key.
#[derive(Debug, thiserror::Error)]
#[error("{bucket} {key}: {message}")]
pub struct StoreError {
    kind: StoreErrorKind,
    bucket: &'static str,
    key: String,
    message: String,
}

impl StoreError {
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    fn new(
        kind: StoreErrorKind,
        bucket: &'static str,
        key: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            bucket,
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// A KV bucket holding values of type `T` (as JSON).
pub struct Store<T> {
    /// Shared: the client's handle carries the stream's whole info, which each clone of a
    /// store (one per fence, per status holder) would otherwise copy.
    kv: Arc<kv::Store>,
    bucket: &'static str,
    /// For writes with a per-key TTL, which the KV client does not offer.
    js: Option<(jetstream::Context, String)>,
    _values: PhantomData<fn() -> T>,
}

impl<T> Clone for Store<T> {
    fn clone(&self) -> Self {
        Self {
            kv: self.kv.clone(),
            bucket: self.bucket,
            js: self.js.clone(),
            _values: PhantomData,
        }
    }
}

/// What [`Store::seed`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seeded {
    Created,
    /// The key has a value: left as it is.
    Exists,
    /// The key was deleted: left deleted.
    Removed,
}

/// A key as last read: its value (if a `Put`) and the revision of its last entry, which
/// a write must name even when that entry is a deletion.
struct Slot<T> {
    value: Option<T>,
    revision: Option<u64>,
    /// Its last entry is a deletion (not a purge, nor an expiry).
    deleted: bool,
}

impl<T: Serialize + DeserializeOwned> Store<T> {
    /// The store over `kv`, named `bucket` in errors.
    pub fn new(kv: kv::Store, bucket: &'static str) -> Self {
        Self {
            kv: Arc::new(kv),
            bucket,
            js: None,
            _values: PhantomData,
        }
    }

    /// This store, able to write keys with their own TTL ([`Store::put_with_ttl`]); the
    /// bucket must allow per-key TTLs (`limit_markers`). `api_prefix` is the one `js`
    /// was built with ([`crate::jetstream::Settings::api_prefix`]): through a JetStream
    /// domain, writes go to `<api_prefix>.$KV.<bucket>.<key>`, as the KV client's own do.
    pub fn with_ttl_writes(mut self, js: jetstream::Context, api_prefix: String) -> Self {
        self.js = Some((js, api_prefix));
        self
    }

    /// Writes `value` under `key`, whatever is there, to expire after `ttl` (whole seconds,
    /// at least one) unless written again: heartbeats and observations.
    pub async fn put_with_ttl(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<u64, StoreError> {
        self.publish_with_ttl(key, value, ttl, async_nats::HeaderMap::new())
            .await
    }

    /// Writes `value` under `key`, to expire after `ttl` unless written again, only if the
    /// key's last entry is still at `revision` (`None`: the key has no value, whether it
    /// never had one, was deleted or expired). Its new revision; [`StoreErrorKind::Changed`]
    /// if another writer came first. Leases are taken and renewed this way.
    pub async fn write_with_ttl_if(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
        revision: Option<u64>,
    ) -> Result<u64, StoreError> {
        let expected = match revision {
            Some(revision) => revision,
            // Free: its last entry, if any, must be a deletion or an expiry, named by
            // revision so that a writer racing us fails.
            None => {
                let slot = self.slot(key).await?;
                if slot.value.is_some() {
                    return Err(self.error(StoreErrorKind::Changed, key, "it has a value"));
                }
                slot.revision.unwrap_or(0)
            }
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected.to_string().as_str(),
        );
        self.publish_with_ttl(key, value, ttl, headers).await
    }

    async fn publish_with_ttl(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
        mut headers: async_nats::HeaderMap,
    ) -> Result<u64, StoreError> {
        let Some((js, api_prefix)) = &self.js else {
            return Err(self.error(
                StoreErrorKind::Unavailable,
                key,
                "this store was not given TTL writes",
            ));
        };
        let mut subject = String::new();
        if self.kv.use_jetstream_prefix {
            subject.push_str(api_prefix);
            subject.push('.');
        }
        subject.push_str(self.kv.put_prefix.as_ref().unwrap_or(&self.kv.prefix));
        subject.push_str(key);
        headers.insert(
            async_nats::header::NATS_MESSAGE_TTL,
            format!("{}s", ttl.as_secs().max(1)).as_str(),
        );
        use async_nats::jetstream::context::PublishErrorKind;
        let failed = |e: async_nats::jetstream::context::PublishError| match e.kind() {
            PublishErrorKind::WrongLastSequence => {
                self.error(StoreErrorKind::Changed, key, "changed since it was read")
            }
            _ => self.error(StoreErrorKind::Unavailable, key, e.to_string()),
        };
        let ack = js
            .publish_with_headers(subject, headers, self.encode(key, value)?)
            .await
            .map_err(failed)?
            .await
            .map_err(failed)?;
        Ok(ack.sequence)
    }

    /// Creates `key` only if it never had a value, or its value expired: a key deleted
    /// on purpose stays deleted (seeding from configuration at start must not bring back
    /// what was removed at runtime).
    pub async fn seed(&self, key: &str, value: &T) -> Result<Seeded, StoreError> {
        let slot = self.slot(key).await?;
        if slot.value.is_some() {
            return Ok(Seeded::Exists);
        }
        if slot.deleted {
            return Ok(Seeded::Removed);
        }
        match self.create(key, value).await {
            Ok(_) => Ok(Seeded::Created),
            Err(e) if e.kind() == StoreErrorKind::AlreadyExists => Ok(Seeded::Exists),
            Err(e) => Err(e),
        }
    }

    /// The bucket itself, for what the store does not cover (watching every key).
    pub fn bucket(&self) -> &kv::Store {
        &self.kv
    }

    /// The value of `key` with its revision; `None` if it has none (never written, deleted
    /// or purged).
    pub async fn read(&self, key: &str) -> Result<Option<Versioned<T>>, StoreError> {
        let slot = self.slot(key).await?;
        Ok(match (slot.value, slot.revision) {
            (Some(value), Some(revision)) => Some(Versioned { value, revision }),
            _ => None,
        })
    }

    /// Writes `value` under `key` if the key has none; its revision. Fails with
    /// [`StoreErrorKind::AlreadyExists`] otherwise.
    pub async fn create(&self, key: &str, value: &T) -> Result<u64, StoreError> {
        match self.kv.create(key, self.encode(key, value)?).await {
            Ok(revision) => Ok(revision),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                Err(self.error(StoreErrorKind::AlreadyExists, key, "already exists"))
            }
            Err(e) => Err(self.error(StoreErrorKind::Unavailable, key, e.to_string())),
        }
    }

    /// The value of `key` (if a `Put`) and the revision of its last entry, 0 if it never
    /// had one: where a [`Store::write_if`] must start, whatever the entry is.
    pub async fn read_at(&self, key: &str) -> Result<(Option<T>, u64), StoreError> {
        let slot = self.slot(key).await?;
        Ok((slot.value, slot.revision.unwrap_or(0)))
    }

    /// Writes `value` under `key` only if the key's last entry is still at `revision` (0:
    /// the key never had one); the new revision, or [`StoreErrorKind::Changed`]. For
    /// callers that decide between attempts with requests of their own, which
    /// [`Store::modify`]'s closure cannot make.
    pub async fn write_if(&self, key: &str, value: &T, revision: u64) -> Result<u64, StoreError> {
        self.kv
            .update(key, self.encode(key, value)?, revision)
            .await
            .map_err(|e| self.update_error(key, e))
    }

    /// Deletes `key` if its value is still at `revision`; [`StoreErrorKind::Changed`] if not.
    pub async fn delete_if(&self, key: &str, revision: u64) -> Result<(), StoreError> {
        self.kv
            .delete_expect_revision(key, Some(revision))
            .await
            .map_err(|e| self.update_error(key, e))
    }

    /// Reads `key`, asks `change` what to do with its value, and does it with
    /// compare-and-set, reading again and asking again (up to [`ATTEMPTS`] times) when
    /// another writer changed it in between.
    ///
    /// `known` is the value and revision the caller last read or wrote, if any: the first
    /// attempt starts from it instead of reading (the value is usually unchanged since), and
    /// a stale one costs only the failed compare-and-set. `change` may fail with the
    /// caller's own error, which ends the attempts.
    pub async fn modify<E>(
        &self,
        key: &str,
        known: Option<Versioned<T>>,
        mut change: impl FnMut(Option<&T>) -> Result<Change<T>, E>,
    ) -> Result<Modified<T>, E>
    where
        E: From<StoreError>,
    {
        let mut known = known.map(|v| Slot {
            value: Some(v.value),
            revision: Some(v.revision),
            deleted: false,
        });
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(CONFLICT_BACKOFF.delay(attempt as u64)).await;
            }
            let slot = match known.take() {
                Some(slot) => slot,
                None => self.slot(key).await?,
            };
            let written = match change(slot.value.as_ref())? {
                Change::Keep => {
                    return Ok(Modified::Kept(match (slot.value, slot.revision) {
                        (Some(value), Some(revision)) => Some(Versioned { value, revision }),
                        _ => None,
                    }));
                }
                Change::Delete => match (&slot.value, slot.revision) {
                    (None, _) | (_, None) => return Ok(Modified::Deleted),
                    (Some(_), Some(revision)) => match self.delete_if(key, revision).await {
                        Ok(()) => return Ok(Modified::Deleted),
                        Err(e) if e.kind() == StoreErrorKind::Changed => continue,
                        Err(e) => return Err(e.into()),
                    },
                },
                Change::Write(value) => {
                    let bytes = self.encode(key, &value)?;
                    // After a deletion the key still has a revision, which the write names.
                    let result = match slot.revision {
                        Some(revision) => self.kv.update(key, bytes, revision).await,
                        None => self.kv.update(key, bytes, 0).await,
                    };
                    match result {
                        Ok(revision) => Versioned { value, revision },
                        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                        Err(e) => return Err(self.update_error(key, e).into()),
                    }
                }
            };
            return Ok(Modified::Written(written));
        }
        Err(self
            .error(
                StoreErrorKind::Contended,
                key,
                format!("changed by other writers {ATTEMPTS} times in a row; gave up"),
            )
            .into())
    }

    /// The value of `key` now and after each change, `None` when it is deleted; ends only
    /// with the watch (or an error).
    pub async fn watch(
        &self,
        key: &str,
    ) -> Result<
        impl Stream<Item = Result<Option<Versioned<T>>, StoreError>> + Send + 'static + use<T>,
        StoreError,
    >
    where
        T: Send + 'static,
    {
        let watch = self
            .kv
            .watch_with_history(key)
            .await
            .map_err(|e| self.error(StoreErrorKind::Unavailable, key, e.to_string()))?;
        let (bucket, key) = (self.bucket, key.to_owned());
        Ok(watch.map(move |entry| {
            let entry = entry.map_err(|e| {
                StoreError::new(StoreErrorKind::Unavailable, bucket, &key, e.to_string())
            })?;
            match entry.operation {
                kv::Operation::Put => Ok(Some(Versioned {
                    value: decode(bucket, &key, &entry.value)?,
                    revision: entry.revision,
                })),
                kv::Operation::Delete | kv::Operation::Purge => Ok(None),
            }
        }))
    }

    /// The value of every key matching `filter` (a key with NATS wildcards: `prod.>`),
    /// in key order, read in one pass over the last entry of each key. A value that does
    /// not read as `T` is skipped (and logged), so one bad record hides only itself; a
    /// bucket holding two types under different keys is scanned with a filter that
    /// matches one of them only.
    pub async fn scan(&self, filter: &str) -> Result<Vec<(String, Versioned<T>)>, StoreError> {
        use async_nats::jetstream::consumer::DeliverPolicy;
        let entries = self
            .entries(filter, DeliverPolicy::LastPerSubject, u64::MAX)
            .await?;
        let found: std::collections::BTreeMap<_, _> = entries.entries.into_iter().collect();
        Ok(found.into_iter().collect())
    }

    /// The entries written at or after `since`, at most the newest `max` of them (by
    /// revision: `truncated` says older ones were left out), in revision order. With a
    /// history of 1, each key appears at most once, with its value now.
    pub async fn recent(
        &self,
        since: std::time::SystemTime,
        max: u64,
    ) -> Result<Recent<T>, StoreError> {
        use async_nats::jetstream::consumer::DeliverPolicy;
        let last = self.last_revision().await?;
        let start_time = time::OffsetDateTime::from(since);
        let mut recent = self
            .entries(">", DeliverPolicy::ByStartTime { start_time }, max)
            .await?;
        if recent.truncated {
            let start_sequence = last.saturating_sub(max).saturating_add(1);
            recent = self
                .entries(">", DeliverPolicy::ByStartSequence { start_sequence }, max)
                .await?;
            recent.truncated = true;
        }
        recent.last_revision = recent.last_revision.max(last);
        Ok(recent)
    }

    /// The bucket's newest revision (its stream's last sequence): what a
    /// [`Store::changes_after`] resumes from to miss nothing written after a read.
    pub async fn last_revision(&self) -> Result<u64, StoreError> {
        let mut stream = self.kv.stream.clone();
        stream
            .info()
            .await
            .map(|info| info.state.last_sequence)
            .map_err(|e| self.error(StoreErrorKind::Unavailable, ">", e.to_string()))
    }

    /// Every change to any key after revision `after`, as it happens: the key, the
    /// revision, and the value (`None`: deleted). Values that do not read as `T` are
    /// skipped (and logged). Ends only with the watch (or an error).
    pub async fn changes_after(
        &self,
        after: u64,
    ) -> Result<
        impl Stream<Item = Result<KeyChange<T>, StoreError>> + Send + 'static + use<T>,
        StoreError,
    >
    where
        T: Send + 'static,
    {
        let watch = self
            .kv
            .watch_all_from_revision(after.saturating_add(1))
            .await
            .map_err(|e| self.error(StoreErrorKind::Unavailable, ">", e.to_string()))?;
        let bucket = self.bucket;
        Ok(watch.filter_map(move |entry| async move {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    return Some(Err(StoreError::new(
                        StoreErrorKind::Unavailable,
                        bucket,
                        ">",
                        e.to_string(),
                    )));
                }
            };
            let value = match entry.operation {
                kv::Operation::Put => match decode(bucket, &entry.key, &entry.value) {
                    Ok(value) => Some(value),
                    Err(e) => {
                        tracing::warn!(bucket, key = %entry.key, error = %e, "unreadable value skipped");
                        return None;
                    }
                },
                kv::Operation::Delete | kv::Operation::Purge => None,
            };
            Some(Ok(KeyChange {
                key: entry.key,
                revision: entry.revision,
                value,
            }))
        }))
    }

    /// The entries of keys matching `filter` that `deliver` selects, in revision order;
    /// `truncated` (and none read) when more than `max` are pending.
    async fn entries(
        &self,
        filter: &str,
        deliver: async_nats::jetstream::consumer::DeliverPolicy,
        max: u64,
    ) -> Result<Recent<T>, StoreError> {
        use async_nats::jetstream::consumer::pull::OrderedConfig;
        let unavailable = |e: &dyn std::fmt::Display| {
            self.error(StoreErrorKind::Unavailable, filter, e.to_string())
        };
        let consumer = self
            .kv
            .stream
            .create_consumer(OrderedConfig {
                filter_subject: format!("{}{filter}", self.kv.prefix),
                deliver_policy: deliver,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&e))?;
        let mut recent = Recent {
            entries: Vec::new(),
            last_revision: 0,
            truncated: false,
        };
        let pending = consumer.cached_info().num_pending;
        if pending == 0 {
            return Ok(recent);
        }
        if pending > max {
            recent.truncated = true;
            return Ok(recent);
        }
        let mut messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
        loop {
            // Bounded: were the entries still pending to go (limits, a purge) before they
            // are delivered, the last one would never come.
            let next = tokio::time::timeout(SCAN_IDLE, messages.next())
                .await
                .map_err(|_| unavailable(&"no entry within the scan's idle bound"))?;
            let Some(message) = next else { break };
            let message = message.map_err(|e| unavailable(&e))?;
            let info = message.info().map_err(|e| unavailable(&e))?;
            let (revision, last) = (info.stream_sequence, info.pending == 0);
            recent.last_revision = revision;
            let key = message
                .subject
                .strip_prefix(self.kv.prefix.as_str())
                .unwrap_or(&message.subject)
                .to_owned();
            let removed = message
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
            if !removed {
                match decode(self.bucket, &key, &message.payload) {
                    Ok(value) => recent.entries.push((key, Versioned { value, revision })),
                    Err(e) => {
                        tracing::warn!(bucket = self.bucket, %key, error = %e, "unreadable value skipped")
                    }
                }
            }
            if last {
                break;
            }
        }
        Ok(recent)
    }

    async fn slot(&self, key: &str) -> Result<Slot<T>, StoreError> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| self.error(StoreErrorKind::Unavailable, key, e.to_string()))?;
        Ok(match entry {
            None => Slot {
                value: None,
                revision: None,
                deleted: false,
            },
            Some(entry) if entry.operation == kv::Operation::Put => Slot {
                value: Some(decode(self.bucket, key, &entry.value)?),
                revision: Some(entry.revision),
                deleted: false,
            },
            Some(entry) => Slot {
                value: None,
                revision: Some(entry.revision),
                deleted: entry.operation == kv::Operation::Delete,
            },
        })
    }

    fn encode(&self, key: &str, value: &T) -> Result<bytes::Bytes, StoreError> {
        serde_json::to_vec(value)
            .map(bytes::Bytes::from)
            .map_err(|e| self.error(StoreErrorKind::Unreadable, key, e.to_string()))
    }

    fn update_error(&self, key: &str, e: kv::UpdateError) -> StoreError {
        match e.kind() {
            kv::UpdateErrorKind::WrongLastRevision => {
                self.error(StoreErrorKind::Changed, key, "changed since it was read")
            }
            _ => self.error(StoreErrorKind::Unavailable, key, e.to_string()),
        }
    }

    fn error(&self, kind: StoreErrorKind, key: &str, message: impl Into<String>) -> StoreError {
        StoreError::new(kind, self.bucket, key, message)
    }
}

fn decode<T: DeserializeOwned>(
    bucket: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| {
        StoreError::new(
            StoreErrorKind::Unreadable,
            bucket,
            key,
            format!("unreadable value: {e}"),
        )
    })
}

#[cfg(test)]
mod tests;
