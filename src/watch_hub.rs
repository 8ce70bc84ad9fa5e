//! Who watches what, and handing each applied revision's events to the
//! streams of the watchers it concerns.
//!
//! The Raft thread applies entries in log order and then calls
//! [`WatchHub::publish`] with the events of the batch (already in revision
//! and sub-revision order) and the revision it reached. For every revision,
//! each *synced* watcher that matches gets one [`StreamMsg::Events`] with
//! all its events of that revision (so a revision is never split), pushed
//! with `try_send` into its stream's bounded channel
//! ([`WATCH_STREAM_MSGS_MAX`]). A full channel never blocks apply: the
//! watcher becomes a *victim* (unsynced, remembering the first revision it
//! did not get) and its stream catches it up from MVCC history.
//!
//! Registration and resync close the race with apply by holding the hub
//! lock while they read the remaining history from the keyspace (lock
//! order: hub, then keyspace; the Raft thread never holds the keyspace lock
//! while taking the hub's). A watcher registered at `next_rev` ignores
//! published events below it, so an event is never lost or repeated.

use ferrocd_core::{prefix_end, KeyRange};
use ferrocd_proto::mvccpb::{event::EventType, Event};
use ferrocd_shards::Keyspace;
use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use tokio::sync::mpsc;

/// Messages buffered per watch stream between apply and the stream's task
/// (etcd's `chanBufLen`).
pub const WATCH_STREAM_MSGS_MAX: usize = 128;

/// Identifies a watch stream within the hub.
pub type StreamId = u64;

/// What the hub hands a stream.
#[derive(Debug)]
pub enum StreamMsg {
    /// Events of one revision for one watch.
    Events {
        /// The watch.
        watch_id: i64,
        /// The revision of the events (the response header's revision).
        revision: i64,
        /// The events, in sub-revision order (filters applied).
        events: Vec<Event>,
    },
    /// Every event up to `revision` has been handed to this stream (the
    /// answer to a progress request, queued behind those events).
    Progress {
        /// The bookmark revision.
        revision: i64,
    },
}

/// A key range owned by a watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRange {
    /// Start key.
    pub key: Vec<u8>,
    /// etcd's range end (empty: single key; `"\0"`: from key).
    pub range_end: Vec<u8>,
}

impl WatchRange {
    fn as_range(&self) -> KeyRange<'_> {
        KeyRange::new(&self.key, &self.range_end)
    }

    fn is_single_key(&self) -> bool {
        self.range_end.is_empty()
    }

    /// `Some(prefix)` when the range is exactly "every key starting with
    /// prefix" (a non-empty prefix): indexed by prefix, not scanned.
    fn as_prefix(&self) -> Option<&[u8]> {
        (!self.key.is_empty()
            && self.key != [0]
            && self.range_end != [0]
            && prefix_end(&self.key) == self.range_end)
            .then_some(&self.key[..])
    }
}

/// Where a watcher is indexed.
fn slot(range: &WatchRange) -> Slot<'_> {
    if range.is_single_key() {
        Slot::Key(&range.key)
    } else if let Some(p) = range.as_prefix() {
        Slot::Prefix(p)
    } else {
        Slot::Range
    }
}

enum Slot<'a> {
    Key(&'a [u8]),
    Prefix(&'a [u8]),
    Range,
}

/// What a watcher wants.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    /// Keys watched.
    pub range: WatchRange,
    /// Drop PUT events.
    pub no_put: bool,
    /// Drop DELETE events.
    pub no_delete: bool,
}

impl WatchSpec {
    /// Whether `e` passes the filters.
    #[must_use]
    pub fn wants(&self, e: &Event) -> bool {
        if e.r#type == EventType::Delete as i32 {
            !self.no_delete
        } else {
            !self.no_put
        }
    }
}

#[derive(Debug)]
struct Watcher {
    spec: WatchSpec,
    /// Lowest revision not yet handed to the stream.
    next_rev: i64,
    synced: bool,
}

#[derive(Debug)]
struct Stream {
    tx: mpsc::Sender<StreamMsg>,
    victims: Arc<AtomicBool>,
    /// Its watch ids.
    ids: HashSet<i64>,
    /// How many of them are victims.
    unsynced: usize,
}

#[derive(Debug, Default)]
struct Inner {
    streams: HashMap<StreamId, Stream>,
    watchers: HashMap<(StreamId, i64), Watcher>,
    /// Single-key watchers by key.
    by_key: HashMap<Vec<u8>, Vec<(StreamId, i64)>>,
    /// Prefix watchers by prefix (an event key looks up each of its
    /// prefixes).
    by_prefix: HashMap<Vec<u8>, Vec<(StreamId, i64)>>,
    /// Other range watchers (checked against every event).
    ranges: Vec<(StreamId, i64)>,
    next_stream: StreamId,
}

/// A watcher that fell behind, to be caught up by its stream.
#[derive(Clone, Debug)]
pub struct Victim {
    /// Its watch id.
    pub watch_id: i64,
    /// What it watches.
    pub spec: WatchSpec,
    /// First revision it has not received.
    pub next_rev: i64,
}

/// Outcome of registering (or resyncing) a watcher.
#[derive(Debug)]
pub enum Registered {
    /// Synced; `gap` are the history events from `next_rev` up to
    /// `revision` (the keyspace revision read under the lock), to be sent
    /// before anything else for this watch.
    Synced {
        /// Events the watcher still needs from history.
        gap: Vec<Event>,
        /// Keyspace revision when it was registered.
        revision: i64,
    },
    /// `next_rev` is below the compaction point: cancel with it.
    Compacted(i64),
}

/// The registry of every watcher on this node.
#[derive(Debug, Default)]
pub struct WatchHub {
    inner: Mutex<Inner>,
    /// Highest revision whose events have been published.
    published: AtomicI64,
}

impl WatchHub {
    /// An empty hub whose store is at `revision`.
    #[must_use]
    pub fn new(revision: i64) -> WatchHub {
        WatchHub {
            inner: Mutex::default(),
            published: AtomicI64::new(revision),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// (watch streams, watchers) registered now.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.streams.len(), inner.watchers.len())
    }

    /// Highest published revision.
    pub fn published(&self) -> i64 {
        self.published.load(Ordering::Acquire)
    }

    /// Adds a stream; returns its id, its message channel and its
    /// "has victims" flag.
    pub fn add_stream(&self) -> (StreamId, mpsc::Receiver<StreamMsg>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::channel(WATCH_STREAM_MSGS_MAX);
        let victims = Arc::new(AtomicBool::new(false));
        let mut inner = self.lock();
        let id = inner.next_stream;
        inner.next_stream += 1;
        inner.streams.insert(
            id,
            Stream {
                tx,
                victims: victims.clone(),
                ids: HashSet::new(),
                unsynced: 0,
            },
        );
        (id, rx, victims)
    }

    /// Removes a stream and all its watchers.
    pub fn remove_stream(&self, stream: StreamId) {
        let mut inner = self.lock();
        let ids: Vec<i64> = inner
            .streams
            .get(&stream)
            .map(|s| s.ids.iter().copied().collect())
            .unwrap_or_default();
        for w in ids {
            Self::unindex(&mut inner, stream, w);
        }
        inner.streams.remove(&stream);
    }

    /// Registers a watcher that has received everything below `next_rev`.
    /// Reads the rest of history under the hub lock (see module docs).
    pub fn register(
        &self,
        stream: StreamId,
        watch_id: i64,
        spec: WatchSpec,
        next_rev: i64,
        keyspace: &RwLock<Keyspace>,
    ) -> Registered {
        let mut inner = self.lock();
        let (gap, revision) = match Self::read_gap(&spec, next_rev, keyspace, self.published()) {
            Ok(g) => g,
            Err(compacted) => {
                Self::unindex(&mut inner, stream, watch_id);
                return Registered::Compacted(compacted);
            }
        };
        let id = (stream, watch_id);
        match slot(&spec.range) {
            Slot::Key(k) => inner.by_key.entry(k.to_vec()).or_default().push(id),
            Slot::Prefix(p) => inner.by_prefix.entry(p.to_vec()).or_default().push(id),
            Slot::Range => inner.ranges.push(id),
        }
        let old = inner.watchers.insert(
            id,
            Watcher {
                spec,
                next_rev: next_rev.max(revision + 1),
                synced: true,
            },
        );
        debug_assert!(old.is_none(), "watch id registered twice on a stream");
        if let Some(s) = inner.streams.get_mut(&stream) {
            s.ids.insert(watch_id);
        }
        Registered::Synced { gap, revision }
    }

    /// History from `next_rev` up to the last *published* revision (not the
    /// applied one: events applied but not yet published reach the watcher
    /// through publish, and nothing sent on a stream may run ahead of the
    /// bookmark a progress request would give).
    fn read_gap(
        spec: &WatchSpec,
        next_rev: i64,
        keyspace: &RwLock<Keyspace>,
        published: i64,
    ) -> Result<(Vec<Event>, i64), i64> {
        let ks = keyspace
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let revision = ks.revision().min(published);
        let compacted = ks.compact_revision();
        if next_rev < compacted {
            return Err(compacted);
        }
        let gap = if next_rev <= revision {
            ks.history(&spec.range.as_range(), next_rev, revision)
        } else {
            Vec::new()
        };
        Ok((gap, revision))
    }

    /// Removes a watcher; false if it did not exist.
    pub fn cancel(&self, stream: StreamId, watch_id: i64) -> bool {
        let mut inner = self.lock();
        Self::unindex(&mut inner, stream, watch_id)
    }

    fn unindex(inner: &mut Inner, stream: StreamId, watch_id: i64) -> bool {
        let Some(w) = inner.watchers.remove(&(stream, watch_id)) else {
            return false;
        };
        let id = (stream, watch_id);
        let remove_from = |map: &mut HashMap<Vec<u8>, Vec<(StreamId, i64)>>, k: &[u8]| {
            if let Some(v) = map.get_mut(k) {
                v.retain(|x| *x != id);
                if v.is_empty() {
                    map.remove(k);
                }
            }
        };
        match slot(&w.spec.range) {
            Slot::Key(k) => remove_from(&mut inner.by_key, k),
            Slot::Prefix(p) => remove_from(&mut inner.by_prefix, p),
            Slot::Range => inner.ranges.retain(|x| *x != id),
        }
        if let Some(s) = inner.streams.get_mut(&stream) {
            s.ids.remove(&watch_id);
            if !w.synced {
                s.unsynced -= 1;
            }
        }
        true
    }

    /// The stream's watchers that fell behind (still registered, unsynced).
    pub fn victims(&self, stream: StreamId) -> Vec<Victim> {
        let inner = self.lock();
        let Some(s) = inner.streams.get(&stream).filter(|s| s.unsynced > 0) else {
            return Vec::new();
        };
        s.ids
            .iter()
            .filter_map(|id| {
                let w = &inner.watchers[&(stream, *id)];
                (!w.synced).then(|| Victim {
                    watch_id: *id,
                    spec: w.spec.clone(),
                    next_rev: w.next_rev,
                })
            })
            .collect()
    }

    /// Whether every watcher of the stream is synced.
    pub fn all_synced(&self, stream: StreamId) -> bool {
        self.lock()
            .streams
            .get(&stream)
            .is_none_or(|s| s.unsynced == 0)
    }

    /// Queues a progress marker behind everything already handed to the
    /// stream, if every watcher of it is synced. False when it must wait
    /// (a victim is catching up, or the channel is full).
    pub fn queue_progress(&self, stream: StreamId) -> bool {
        let inner = self.lock();
        let Some(st) = inner.streams.get(&stream) else {
            return false;
        };
        if st.unsynced > 0 {
            return false;
        }
        st.tx
            .try_send(StreamMsg::Progress {
                revision: self.published(),
            })
            .is_ok()
    }

    /// Apply side: hands the events of applied writes (revision order) to
    /// the matching synced watchers; `revision` is the store revision after
    /// them. Never blocks on a stream.
    pub fn publish(&self, events: &[Event], revision: i64) {
        if events.is_empty() {
            self.published.store(revision, Ordering::Release);
            return;
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut start = 0;
        while start < events.len() {
            let rev = mod_revision(&events[start]);
            let end = start
                + events[start..]
                    .iter()
                    .take_while(|e| mod_revision(e) == rev)
                    .count();
            Self::publish_revision(inner, &events[start..end], rev);
            start = end;
        }
        self.published.store(revision, Ordering::Release);
    }

    fn publish_revision(inner: &mut Inner, events: &[Event], rev: i64) {
        // Watcher -> its events of this revision, in sub-revision order.
        let mut out: HashMap<(StreamId, i64), Vec<Event>> = HashMap::new();
        for e in events {
            let key = e.kv.as_ref().map_or(&[][..], |kv| &kv.key[..]);
            let exact = inner.by_key.get(key).into_iter().flatten();
            let prefixed = (1..=key.len())
                .filter_map(|n| inner.by_prefix.get(&key[..n]))
                .flatten();
            let ranged = inner
                .ranges
                .iter()
                .filter(|id| inner.watchers[*id].spec.range.as_range().contains(key));
            for id in exact.chain(prefixed).chain(ranged) {
                let w = &inner.watchers[id];
                if w.synced && w.next_rev <= rev && w.spec.wants(e) {
                    out.entry(*id).or_default().push(e.clone());
                }
            }
        }
        for (id, evs) in out {
            let Some(stream) = inner.streams.get_mut(&id.0) else {
                continue;
            };
            let msg = StreamMsg::Events {
                watch_id: id.1,
                revision: rev,
                events: evs,
            };
            let w = inner.watchers.get_mut(&id).expect("matched above");
            match stream.tx.try_send(msg) {
                Ok(()) => w.next_rev = rev + 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Falls back to history from `rev`; apply goes on.
                    w.synced = false;
                    w.next_rev = rev;
                    stream.unsynced += 1;
                    stream.victims.store(true, Ordering::Release);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    /// Re-registers a victim after its stream sent history up to
    /// `next_rev - 1`; returns the remaining gap as [`WatchHub::register`].
    pub fn resync(
        &self,
        stream: StreamId,
        watch_id: i64,
        next_rev: i64,
        keyspace: &RwLock<Keyspace>,
    ) -> Option<Registered> {
        let mut inner = self.lock();
        let spec = inner.watchers.get(&(stream, watch_id))?.spec.clone();
        match Self::read_gap(&spec, next_rev, keyspace, self.published()) {
            Err(compacted) => {
                Self::unindex(&mut inner, stream, watch_id);
                Some(Registered::Compacted(compacted))
            }
            Ok((gap, revision)) => {
                let w = inner.watchers.get_mut(&(stream, watch_id))?;
                let was_victim = !w.synced;
                w.synced = true;
                w.next_rev = next_rev.max(revision + 1);
                if was_victim {
                    if let Some(s) = inner.streams.get_mut(&stream) {
                        s.unsynced -= 1;
                    }
                }
                Some(Registered::Synced { gap, revision })
            }
        }
    }
}

fn mod_revision(e: &Event) -> i64 {
    e.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocd_proto::etcdserverpb::{DeleteRangeRequest, PutRequest};

    fn spec(key: &str, end: &[u8]) -> WatchSpec {
        WatchSpec {
            range: WatchRange {
                key: key.as_bytes().to_vec(),
                range_end: end.to_vec(),
            },
            no_put: false,
            no_delete: false,
        }
    }

    fn put(ks: &RwLock<Keyspace>, hub: &WatchHub, k: &str) {
        let mut ks = ks.write().unwrap();
        ks.put(&PutRequest {
            key: k.into(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .unwrap();
        let evs = ks.take_events();
        let rev = ks.revision();
        drop(ks);
        hub.publish(&evs, rev);
    }

    fn revisions(rx: &mut mpsc::Receiver<StreamMsg>) -> Vec<(i64, i64, Vec<String>)> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            match m {
                StreamMsg::Events {
                    watch_id,
                    revision,
                    events,
                } => out.push((
                    watch_id,
                    revision,
                    events
                        .iter()
                        .map(|e| String::from_utf8_lossy(&e.kv.as_ref().unwrap().key).into_owned())
                        .collect(),
                )),
                StreamMsg::Progress { revision } => out.push((-1, revision, Vec::new())),
            }
        }
        out
    }

    #[test]
    fn keys_prefixes_and_ranges_get_their_events() {
        let ks = RwLock::new(Keyspace::new(4));
        let hub = WatchHub::new(1);
        let (sid, mut rx, _) = hub.add_stream();
        let all = vec![0u8];
        for (id, sp) in [
            (0, spec("a/1", b"")),
            (1, spec("a/", &prefix_end(b"a/"))),
            (2, spec("\0", &all)),
            (3, spec("a/2", b"b")),
        ] {
            assert!(matches!(
                hub.register(sid, id, sp, 2, &ks),
                Registered::Synced { .. }
            ));
        }
        put(&ks, &hub, "a/1"); // 2
        put(&ks, &hub, "a/2"); // 3
        put(&ks, &hub, "c"); // 4
        let got = revisions(&mut rx);
        let mut r2: Vec<i64> = got.iter().filter(|m| m.1 == 2).map(|m| m.0).collect();
        r2.sort_unstable();
        assert_eq!(r2, [0, 1, 2]);
        let mut r3: Vec<i64> = got.iter().filter(|m| m.1 == 3).map(|m| m.0).collect();
        r3.sort_unstable();
        assert_eq!(r3, [1, 2, 3]);
        let r4: Vec<i64> = got.iter().filter(|m| m.1 == 4).map(|m| m.0).collect();
        assert_eq!(r4, [2]);
        assert!(hub.queue_progress(sid));
        assert_eq!(revisions(&mut rx), [(-1, 4, Vec::new())]);
        assert!(hub.cancel(sid, 2));
        put(&ks, &hub, "zzz");
        assert!(revisions(&mut rx).is_empty());
        hub.remove_stream(sid);
        assert!(hub.lock().watchers.is_empty());
        assert!(hub.lock().by_key.is_empty() && hub.lock().by_prefix.is_empty());
    }

    #[test]
    fn a_full_stream_turns_its_watcher_into_a_victim_without_blocking() {
        let ks = RwLock::new(Keyspace::new(2));
        let hub = WatchHub::new(1);
        let (sid, mut rx, victims) = hub.add_stream();
        hub.register(sid, 7, spec("k", b""), 2, &ks);
        for _ in 0..WATCH_STREAM_MSGS_MAX + 10 {
            put(&ks, &hub, "k");
        }
        assert!(victims.load(Ordering::Acquire));
        assert!(!hub.all_synced(sid));
        assert!(!hub.queue_progress(sid), "progress waits for victims");
        let delivered = revisions(&mut rx);
        assert_eq!(delivered.len(), WATCH_STREAM_MSGS_MAX);
        let last = delivered.last().unwrap().1;
        let v = hub.victims(sid);
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0].next_rev,
            last + 1,
            "resumes right after the last delivery"
        );
        // The stream catches up from history, then resyncs.
        let Some(Registered::Synced { gap, revision }) = hub.resync(sid, 7, v[0].next_rev, &ks)
        else {
            panic!("resync")
        };
        assert_eq!(gap.len(), 10);
        assert_eq!(revision, ks.read().unwrap().revision());
        assert!(hub.all_synced(sid));
        put(&ks, &hub, "k");
        assert_eq!(revisions(&mut rx).len(), 1);
    }

    #[test]
    fn registration_reads_the_gap_and_compaction_cancels() {
        let ks = RwLock::new(Keyspace::new(2));
        let hub = WatchHub::new(1);
        let (sid, mut rx, _) = hub.add_stream();
        for _ in 0..5 {
            put(&ks, &hub, "k"); // 2..=6
        }
        ks.write()
            .unwrap()
            .delete_range(&DeleteRangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })
            .unwrap(); // 7, applied but not yet published
        let Registered::Synced { gap, revision } = hub.register(sid, 0, spec("k", b""), 4, &ks)
        else {
            panic!()
        };
        // The gap stops at the published revision (6): revision 7 is
        // applied but reaches the watcher through publish, exactly once.
        assert_eq!(revision, 6);
        let revs: Vec<i64> = gap
            .iter()
            .map(|e| e.kv.as_ref().unwrap().mod_revision)
            .collect();
        assert_eq!(revs, [4, 5, 6]);
        let evs = ks.write().unwrap().take_events();
        hub.publish(&evs[evs.len() - 1..], 7);
        assert_eq!(revisions(&mut rx), [(0, 7, vec!["k".to_string()])]);
        ks.write()
            .unwrap()
            .compact(&ferrocd_proto::etcdserverpb::CompactionRequest {
                revision: 5,
                physical: false,
            })
            .unwrap();
        assert!(matches!(
            hub.register(sid, 1, spec("k", b""), 3, &ks),
            Registered::Compacted(5)
        ));
    }
}
