//! Objects of one cluster, its single resourceVersion counter, and the bounded event history
//! that watches resume from.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

/// Events a watcher may fall behind by before it gets 410 Expired.
const WATCH_BUFFER: usize = 4096;

/// `(group, plural, namespace or "", name)`.
pub type ObjKey = (String, String, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history and sent to watchers.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub rv: u64,
    pub kind: EventType,
    pub group: String,
    pub plural: String,
    pub object: Value,
    /// The object before a modification, so a selector watch can tell an object leaving it.
    pub prev: Option<Value>,
}

/// The result of asking for history after a resourceVersion.
pub enum Since {
    Events(Vec<Arc<StoredEvent>>),
    /// The version was compacted away; carries the oldest version still available.
    Expired(u64),
}

#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<ObjKey, Value>,
    history: VecDeque<Arc<StoredEvent>>,
    history_limit: usize,
    /// Events at or below this version are no longer in the history.
    compacted: u64,
    /// Made on the first watch: a channel's buffer is preallocated, and most clusters of a
    /// large fleet are never watched.
    tx: Option<broadcast::Sender<Arc<StoredEvent>>>,
    /// Set when the cluster is removed: its watches end, and new ones end at once.
    closed: bool,
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        Store {
            rv: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit,
            compacted: 1,
            tx: None,
            closed: false,
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, key: &ObjKey) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Objects of one resource, in (namespace, name) order, optionally in one namespace.
    pub fn list<'a>(
        &'a self,
        group: &'a str,
        plural: &'a str,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ObjKey, &'a Value)> + 'a {
        self.objects.iter().filter(move |((g, p, n, _), _)| {
            g == group && p == plural && ns.is_none_or(|ns| ns == n)
        })
    }

    pub fn keys_in_namespace(&self, ns: &str) -> Vec<ObjKey> {
        self.objects
            .keys()
            .filter(|(_, _, n, _)| n == ns)
            .cloned()
            .collect()
    }

    /// Stores an object with the next resourceVersion and records the event.
    pub fn put(&mut self, key: ObjKey, mut obj: Value) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let prev = self.objects.insert(key.clone(), obj.clone());
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(kind, &key, obj.clone(), prev);
        obj
    }

    /// Stores an object that was there before the history began (a cluster's own
    /// namespaces): it gets the next resourceVersion but no event, so watching from an
    /// older version gets 410, as on a real cluster whose early history is long compacted.
    pub fn seed(&mut self, key: ObjKey, mut obj: Value) {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(key, obj);
        self.compacted = self.rv;
    }

    /// Removes an object; the DELETED event carries a new resourceVersion, as on a real server.
    pub fn remove(&mut self, key: &ObjKey) -> Option<Value> {
        let mut obj = self.objects.remove(key)?;
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(EventType::Deleted, key, obj.clone(), None);
        Some(obj)
    }

    fn record(&mut self, kind: EventType, key: &ObjKey, object: Value, prev: Option<Value>) {
        let ev = Arc::new(StoredEvent {
            rv: self.rv,
            kind,
            group: key.0.clone(),
            plural: key.1.clone(),
            object,
            prev,
        });
        self.history.push_back(ev.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        if let Some(tx) = &self.tx {
            // No receivers is fine.
            let _ = tx.send(ev);
        }
    }

    /// Forgets all history: any watch resuming from a version older than now gets 410.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    /// Events after `rv`, or Expired if some of them were compacted away.
    pub fn since(&self, rv: u64) -> Since {
        if rv < self.compacted {
            return Since::Expired(self.compacted);
        }
        Since::Events(self.history.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    /// Events from now on. A watcher more than this many events behind gets 410.
    pub fn subscribe(&mut self) -> broadcast::Receiver<Arc<StoredEvent>> {
        if self.closed {
            // Its sender is dropped at once: the watch ends.
            return broadcast::channel(1).1;
        }
        self.tx
            .get_or_insert_with(|| broadcast::channel(WATCH_BUFFER).0)
            .subscribe()
    }

    /// Ends every watch, now and later (the cluster is gone).
    pub fn close(&mut self) {
        self.closed = true;
        self.tx = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjKey {
        (
            "".into(),
            "configmaps".into(),
            "default".into(),
            name.into(),
        )
    }

    #[test]
    fn one_counter_and_bounded_history() {
        let mut s = Store::new(2);
        let a = s.put(key("a"), json!({"metadata": {}}));
        assert_eq!(a["metadata"]["resourceVersion"], "2");
        s.put(key("b"), json!({"metadata": {}}));
        s.put(key("a"), json!({"metadata": {}}));
        assert!(matches!(s.since(1), Since::Expired(2)));
        match s.since(2) {
            Since::Events(ev) => assert_eq!(ev.len(), 2),
            Since::Expired(_) => panic!("rv 2 is still in history"),
        }
        let deleted = s.remove(&key("a")).unwrap();
        assert_eq!(deleted["metadata"]["resourceVersion"], "5");
        s.compact();
        assert!(matches!(s.since(4), Since::Expired(5)));
    }
}
