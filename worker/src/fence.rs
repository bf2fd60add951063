//! Per-object fences in the `LONGSHORE_OBJECTS` bucket: two operations never change one
//! object at the same time, and an operation older than the one already applied to an
//! object is never applied over it ("latest intent wins").
//!
//! # The protocol
//!
//! - **Key**: one KV key per object, [`key`]: `obj-` and 32 base32 characters of a SHA-256
//!   over (cluster, API group, kind, namespace, name). The group, not the version, so
//!   `apps/v1` and `apps/v1beta1` share a fence; the namespace as the object will be written
//!   (`default` filled in for namespaced kinds, none for cluster-scoped ones).
//! - **Value** ([`Fence`], JSON): `holder` (operation id, its stream sequence, worker,
//!   `lease_until`) while an operation is changing the object; `applied_seq`/`applied_op`,
//!   the stream sequence and id of the latest operation whose effect reached the object.
//! - **Acquire**, for an operation delivered with stream sequence `seq`: start from what
//!   this worker knows without reading (the fence as its own last operation on the object
//!   left it, or none: a new object); after a refused compare-and-set, read the fence and
//!   *resolve* its holder (below). If `applied_seq > seq` the object is *superseded* for
//!   this operation (see below) and is left alone. If another operation holds it with a
//!   lease in the future, the object is busy: the operation releases what it took and goes
//!   back to the queue ([`OpError::Fenced`], retried with backoff). Otherwise (free, lease
//!   expired, or held by this same operation, i.e. a redelivery after a crash)
//!   compare-and-set the fence to hold it at the revision it was known at, re-reading on a
//!   conflict (bounded).
//! - **Resolve**: a fence that names a holder other than the taker is free if that
//!   holder's final record is written; the record's `appliedFences` says whether its
//!   effect reached this object, and if so `applied_seq` advances to the holder's sequence
//!   first. A holder whose record is not final (running, or going to be redelivered) or
//!   missing is left to its lease.
//! - **Order**: an operation takes its fences one at a time in the order of their keys and
//!   never waits while holding some: two operations over the same objects cannot deadlock.
//! - **Lease**: `fence.lease` (default 60 s, at least `pool.ack_wait`). The holder renews
//!   it with each progress signal (every `ack_wait / 3`) and stops writing if it could not
//!   renew for three quarters of a lease (the last quarter is slack for clock skew between
//!   workers, which compare `lease_until` with their own clocks). A dead worker's fences
//!   expire with their lease; its own operation, redelivered after `ack_wait`, takes them
//!   back at once because the holder is the same operation.
//! - **Release**, after the effects: the operation's final record names the fences whose
//!   object has its effect (written, found unchanged, deleted or already absent) and so
//!   releases every fence it held, with no write to them ([`Guard::ended`]). Objects that
//!   were superseded or not reached (the operation stopped at an error first) are not
//!   named. An operation that is not over (handed back to the queue) writes its fences
//!   back instead ([`Guard::release`]): holder none, `applied_seq` to `max(applied_seq,
//!   seq)` where its effect is in; and so does every release while a worker of a version
//!   that expects it (one whose member key does not say `fences`) is alive. Dry runs take
//!   no fences and so never supersede nor advance.
//! - **Unknown outcome**: when the operation stops at a transient error on an object (a
//!   5xx, a timeout, a connection reset that may have come *after* the API server committed
//!   the write), that object's fence is kept held ([`Guard::keep`]): its redelivery retakes
//!   it and finds out, and no other operation touches the object meanwhile.
//!
//! # What "superseded" means
//!
//! An object is superseded for an operation when an operation with a higher stream sequence
//! has already had its effect on that object: the older operation's intent for it is stale,
//! so it is not applied (its result says `superseded`). An operation all of whose objects
//! are superseded is recorded `superseded`; otherwise it succeeds with per-object
//! `superseded` results where that applies. Sequences are those of the messages being
//! processed: an operation requeued from the dead-letter stream gets a new, higher one.
//!
//! # Limits
//!
//! The fence orders longshore's own writes; it cannot stop a worker that lost its lease
//! (paused longer than the slack) from finishing a request already sent. Two deliveries of
//! the *same* operation (a redelivery while the first worker is stalled) may both hold the
//! fence: they carry the same intent, and every action is idempotent.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use longshore_contract::OperationId;
use longshore_contract::backoff::Backoff;
use longshore_contract::jetstream::{OBJECTS_BUCKET, OPERATIONS_BUCKET};
use longshore_contract::record::OperationRecord;
use longshore_contract::spec::ObjectRef;
use longshore_contract::store::{ATTEMPTS, Change, Modified, Store, StoreErrorKind, Versioned};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::error::OpError;

/// Fences a worker remembers as it left them, at most (a few hundred bytes each).
const KNOWN: usize = 8192;

/// The pause after losing a race for a fence to another writer.
const CONFLICT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(2), Duration::from_millis(50));

/// The fence key of `object` (namespace already settled) in `cluster`.
pub fn key(cluster: &str, object: &ObjectRef) -> String {
    let group = object.api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let mut h = Sha256::new();
    for part in [
        cluster,
        group,
        &object.kind,
        object.namespace.as_deref().unwrap_or(""),
        &object.name,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    // 20 bytes = 160 bits = exactly 32 base32 characters, as operation ids.
    format!(
        "obj-{}",
        longshore_contract::id::base32_lower(&h.finalize()[..20])
    )
}

/// The value of one object's fence.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fence {
    /// The operation changing the object now, if any.
    #[serde(default)]
    pub holder: Option<Holder>,
    /// Stream sequence of the latest operation whose effect reached the object (0: none).
    #[serde(default)]
    pub applied_seq: u64,
    #[serde(default)]
    pub applied_op: Option<OperationId>,
}

/// Who holds a fence, and until when without renewal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub op: OperationId,
    pub seq: u64,
    pub worker: String,
    pub lease_until: jiff::Timestamp,
}

/// The objects bucket, as one worker uses it.
#[derive(Clone)]
pub struct Fences {
    store: Store<Fence>,
    /// The status records, where an ended holder's final record released its fences.
    records: Store<OperationRecord>,
    worker: String,
    lease: Duration,
    /// Fences as this worker's own operations left them (holder ended), so the next
    /// operation it carries out on the object takes the fence without reading it.
    known: Arc<std::sync::Mutex<Known>>,
    /// Whether a worker that writes its fences back (a version before records released
    /// them) may be running: then this one writes them back too.
    write_back: Arc<dyn Fn() -> bool + Send + Sync>,
}

/// What acquiring one fence found.
enum Taken {
    /// Taken: the value written and its revision.
    Held(Versioned<Fence>),
    Superseded,
    Busy(Holder),
}

impl Fences {
    pub fn new(objects: kv::Store, records: kv::Store, worker: String, lease: Duration) -> Self {
        Self {
            store: Store::new(objects, OBJECTS_BUCKET),
            records: Store::new(records, OPERATIONS_BUCKET),
            worker,
            lease,
            known: Arc::default(),
            write_back: Arc::new(|| false),
        }
    }

    /// Writes fences back on release whenever `write_back` says a worker that expects it
    /// may be running (a rolling upgrade from a version before records released them).
    pub fn writing_back_while(
        mut self,
        write_back: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        self.write_back = Arc::new(write_back);
        self
    }

    /// Whether a release must write each fence back now.
    pub fn writes_back(&self) -> bool {
        (self.write_back)()
    }

    /// Takes the fences of `objects` (fence key -> object, for messages) for operation `op`
    /// delivered with stream sequence `seq`, in key order. Fails with [`OpError::Fenced`]
    /// (having released what it took) if another operation holds one.
    pub async fn acquire(
        &self,
        op: &OperationId,
        seq: u64,
        objects: &BTreeMap<String, String>,
    ) -> Result<Guard, OpError> {
        let started = Instant::now();
        let mut guard = Guard {
            fences: self.clone(),
            op: op.clone(),
            seq,
            held: tokio::sync::Mutex::new(BTreeMap::new()),
            superseded: BTreeSet::new(),
            valid_until: std::sync::Mutex::new(started),
        };
        // BTreeMap iterates in key order: every operation takes fences in the same order.
        for (key, object) in objects {
            match self.take(key, op, seq).await {
                Ok(Taken::Held(held)) => {
                    guard.held.get_mut().insert(key.clone(), held);
                }
                Ok(Taken::Superseded) => {
                    guard.superseded.insert(key.clone());
                }
                Ok(Taken::Busy(holder)) => {
                    guard.release(&BTreeSet::new()).await;
                    return Err(OpError::Fenced {
                        object: object.clone(),
                        holder: holder.op.to_string(),
                        lease_until: holder.lease_until,
                    });
                }
                Err(e) => {
                    guard.release(&BTreeSet::new()).await;
                    return Err(e);
                }
            }
        }
        *guard
            .valid_until
            .get_mut()
            .unwrap_or_else(|e| e.into_inner()) = started + self.trust();
        Ok(guard)
    }

    /// How long after a successful (re)acquisition this worker trusts its lease: a quarter
    /// of it is left as slack for clocks that disagree.
    fn trust(&self) -> Duration {
        self.lease - self.lease / 4
    }

    /// The fence of `key` as it stands: its holder let go if that holder's final record
    /// is written, with `applied_seq` advanced if the record says its effect is in.
    pub async fn effective(&self, key: &str) -> Result<Option<Fence>, OpError> {
        let (value, _) = self.store.read_at(key).await?;
        match value {
            Some(fence) => Ok(Some(self.resolve(key, fence, None).await?)),
            None => Ok(None),
        }
    }

    /// Takes one fence. The first attempt starts from what this worker knows without
    /// reading: the fence as its own last operation on the object left it, or none at
    /// all (an object no operation has fenced yet). A wrong guess costs the refused
    /// compare-and-set; then the fence is read, its holder resolved, and decided again.
    async fn take(&self, key: &str, op: &OperationId, seq: u64) -> Result<Taken, OpError> {
        let mut guess = Some(self.known_fence(key).unwrap_or(Versioned {
            value: Fence::default(),
            revision: 0,
        }));
        for attempt in 0..ATTEMPTS {
            let (current, revision) = match guess.take() {
                Some(known) => (known.value, known.revision),
                None => {
                    if attempt > 1 {
                        tokio::time::sleep(CONFLICT_BACKOFF.delay(attempt as u64)).await;
                    }
                    let (value, revision) = self.store.read_at(key).await?;
                    let value = self
                        .resolve(key, value.unwrap_or_default(), Some(op))
                        .await?;
                    (value, revision)
                }
            };
            let now = jiff::Timestamp::now();
            if current.applied_seq > seq {
                if current.holder.is_none() {
                    self.remember(
                        key,
                        Versioned {
                            value: current,
                            revision,
                        },
                    );
                }
                return Ok(Taken::Superseded);
            }
            if let Some(holder) = &current.holder
                && holder.op != *op
                && holder.lease_until > now
            {
                return Ok(Taken::Busy(holder.clone()));
            }
            let held = Fence {
                holder: Some(self.holder(op, seq, now)?),
                ..current
            };
            match self.store.write_if(key, &held, revision).await {
                Ok(revision) => {
                    self.forget(key);
                    return Ok(Taken::Held(Versioned {
                        value: held,
                        revision,
                    }));
                }
                Err(e) if e.kind() == StoreErrorKind::Changed => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(OpError::Fence(format!(
            "fence {key}: changed by other writers {ATTEMPTS} times in a row"
        )))
    }

    /// `fence` with its holder let go if that holder (another operation than `taker`)
    /// has ended: its final record is written. The record names the fences whose object
    /// has its effect (`applied_fences`), and `applied_seq` advances for those. A holder
    /// whose record is not final (it is still running, or will be redelivered), or
    /// missing, is left: its lease decides, as for a holder that died.
    async fn resolve(
        &self,
        key: &str,
        mut fence: Fence,
        taker: Option<&OperationId>,
    ) -> Result<Fence, OpError> {
        let Some(holder) = fence.holder.clone() else {
            return Ok(fence);
        };
        if taker == Some(&holder.op) {
            return Ok(fence);
        }
        let Some(record) = self.records.read(holder.op.as_str()).await? else {
            return Ok(fence);
        };
        if !record.value.state.is_terminal() {
            return Ok(fence);
        }
        fence.holder = None;
        if holder.seq > fence.applied_seq && record.value.applied_fences.iter().any(|k| k == key) {
            fence.applied_seq = holder.seq;
            fence.applied_op = Some(holder.op);
        }
        Ok(fence)
    }

    fn known_fence(&self, key: &str) -> Option<Versioned<Fence>> {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fences
            .get(key)
            .cloned()
    }

    fn remember(&self, key: &str, fence: Versioned<Fence>) {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(key, fence);
    }

    fn forget(&self, key: &str) {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fences
            .remove(key);
    }

    fn holder(&self, op: &OperationId, seq: u64, now: jiff::Timestamp) -> Result<Holder, OpError> {
        let lease_until = now
            .checked_add(self.lease)
            .map_err(|e| OpError::Fence(format!("lease end out of range: {e}")))?;
        Ok(Holder {
            op: op.clone(),
            seq,
            worker: self.worker.clone(),
            lease_until,
        })
    }
}

/// Fences by key as this worker's operations left them, the oldest forgotten first.
#[derive(Default)]
struct Known {
    fences: HashMap<String, Versioned<Fence>>,
    order: VecDeque<String>,
}

impl Known {
    fn put(&mut self, key: &str, fence: Versioned<Fence>) {
        if self.fences.insert(key.to_owned(), fence).is_none() {
            self.order.push_back(key.to_owned());
        }
        while self.fences.len() > KNOWN {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.fences.remove(&oldest);
                }
                None => break,
            }
        }
        // Keys forgotten since they were put leave their place in the order behind.
        if self.order.len() > 2 * KNOWN {
            let fences = &self.fences;
            self.order.retain(|k| fences.contains_key(k));
        }
    }
}

/// The fences one operation holds while it carries out its effects.
pub struct Guard {
    fences: Fences,
    op: OperationId,
    seq: u64,
    /// Each held fence with the value and revision this worker last wrote to it.
    held: tokio::sync::Mutex<BTreeMap<String, Versioned<Fence>>>,
    /// Keys of objects a later operation has already been applied to.
    pub superseded: BTreeSet<String>,
    valid_until: std::sync::Mutex<Instant>,
}

impl Guard {
    /// Whether this worker may still write under its fences. Checked before each object.
    pub fn check(&self) -> Result<(), OpError> {
        let until = *self.valid_until.lock().unwrap_or_else(|e| e.into_inner());
        if Instant::now() < until {
            Ok(())
        } else {
            Err(OpError::Fence(
                "could not renew the lease on the object fences in time; not writing under it"
                    .into(),
            ))
        }
    }

    /// Runs `work`, renewing the leases every `every`.
    pub async fn renewing<T>(&self, work: impl Future<Output = T>, every: Duration) -> T {
        let mut work = std::pin::pin!(work);
        let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = ticker.tick() => self.renew().await,
            }
        }
    }

    /// Extends every held lease; trusts them again only if all were extended.
    pub async fn renew(&self) {
        let started = Instant::now();
        let mut held = self.held.lock().await;
        let mut all = true;
        for (key, known) in held.iter_mut() {
            let renewed = self
                .fences
                .store
                .modify(key, Some(known.clone()), |fence| {
                    let mut fence = fence.cloned().unwrap_or_default();
                    match &fence.holder {
                        Some(h) if h.op == self.op => {
                            fence.holder = Some(self.fences.holder(
                                &self.op,
                                self.seq,
                                jiff::Timestamp::now(),
                            )?);
                            Ok(Change::Write(fence))
                        }
                        other => Err(OpError::Fence(format!(
                            "fence {key} was taken over by {:?}",
                            other.as_ref().map(|h| h.op.as_str())
                        ))),
                    }
                })
                .await;
            match renewed {
                Ok(Modified::Written(written)) => *known = written,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "lease not renewed");
                    all = false;
                }
            }
        }
        if all {
            *self.valid_until.lock().unwrap_or_else(|e| e.into_inner()) =
                started + self.fences.trust();
        }
    }

    /// Keeps `key` held past [`Guard::release`]: its object's state is unknown (a write may
    /// have reached the API server without its answer reaching us), so no other operation
    /// may change the object until this one, redelivered, finds out; otherwise an older
    /// operation could slip in between and this one would later change the object a second
    /// time. The same operation retakes the fence at once; the lease bounds everyone else's
    /// wait if it never comes back.
    pub async fn keep(&self, key: &str) {
        self.held.lock().await.remove(key);
    }

    /// The operation's final record, naming `applied`, is written: that let go of every
    /// fence still held, with no write to them. What they now are is remembered, so this
    /// worker's next operation on one of the objects takes its fence without a read.
    pub async fn ended(&self, applied: &BTreeSet<String>) {
        let held = std::mem::take(&mut *self.held.lock().await);
        for (key, known) in held {
            let mut fence = known.value;
            fence.holder = None;
            if applied.contains(&key) && self.seq > fence.applied_seq {
                fence.applied_seq = self.seq;
                fence.applied_op = Some(self.op.clone());
            }
            self.fences.remember(
                &key,
                Versioned {
                    value: fence,
                    revision: known.revision,
                },
            );
        }
    }

    /// Lets go of every held fence by writing it back, advancing `applied_seq` on those in
    /// `applied`: for an operation that is not over (it goes back to the queue, its record
    /// not final), and while workers that expect it may run. Best effort: a fence that
    /// cannot be released now expires with its lease.
    pub async fn release(&self, applied: &BTreeSet<String>) {
        let held = std::mem::take(&mut *self.held.lock().await);
        for (key, known) in held {
            let advance = applied.contains(&key);
            let released = self
                .fences
                .store
                .modify(&key, Some(known), |fence| {
                    let mut fence = fence.cloned().unwrap_or_default();
                    let ours = fence.holder.as_ref().is_some_and(|h| h.op == self.op);
                    let advance = advance && self.seq > fence.applied_seq;
                    if !ours && !advance {
                        return Ok::<_, OpError>(Change::Keep);
                    }
                    if ours {
                        fence.holder = None;
                    }
                    if advance {
                        fence.applied_seq = self.seq;
                        fence.applied_op = Some(self.op.clone());
                    }
                    Ok(Change::Write(fence))
                })
                .await;
            match released {
                Ok(Modified::Written(free)) if free.value.holder.is_none() => {
                    self.fences.remember(&key, free);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, fence = %key, "fence not released; it will expire with its lease");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(api_version: &str, namespace: Option<&str>) -> ObjectRef {
        ObjectRef {
            api_version: api_version.into(),
            kind: "Deployment".into(),
            namespace: namespace.map(Into::into),
            name: "web".into(),
        }
    }

    #[test]
    fn keys_are_kv_safe_and_follow_the_group_not_the_version() {
        let k = key("prod", &object("apps/v1", Some("default")));
        assert_eq!(k.len(), 4 + 32);
        assert!(k.starts_with("obj-"));
        assert!(
            k[4..]
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        );
        assert_eq!(k, key("prod", &object("apps/v1beta1", Some("default"))));
        assert_ne!(
            k,
            key("prod", &object("extensions/v1beta1", Some("default")))
        );
        assert_ne!(k, key("staging", &object("apps/v1", Some("default"))));
        assert_ne!(k, key("prod", &object("apps/v1", Some("other"))));
        assert_ne!(k, key("prod", &object("apps/v1", None)));
    }

    #[test]
    fn core_kinds_have_an_empty_group() {
        let core = ObjectRef {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("default".into()),
            name: "web".into(),
        };
        let mut grouped = core.clone();
        grouped.api_version = "example.com/v1".into();
        assert_ne!(key("prod", &core), key("prod", &grouped));
    }

    #[test]
    fn fences_read_as_the_documented_json() {
        let fence: Fence = serde_json::from_str(
            r#"{"holder":{"op":"op-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","seq":7,"worker":"w1",
                "lease_until":"2030-01-01T00:00:00Z"},"applied_seq":5,"applied_op":null}"#,
        )
        .unwrap();
        assert_eq!(fence.applied_seq, 5);
        assert_eq!(fence.holder.unwrap().seq, 7);
        assert_eq!(
            serde_json::from_str::<Fence>("{}").unwrap(),
            Fence::default()
        );
    }
}
