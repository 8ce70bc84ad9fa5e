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

use ferrocd_core::KeyRange;
use ferrocd_proto::mvccpb::{event::EventType, Event};
use ferrocd_shards::Keyspace;
use std::collections::HashMap;
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
}

#[derive(Debug, Default)]
struct Inner {
    streams: HashMap<StreamId, Stream>,
    watchers: HashMap<(StreamId, i64), Watcher>,
    /// Single-key watchers by key.
    by_key: HashMap<Vec<u8>, Vec<(StreamId, i64)>>,
    /// Range watchers (checked against every event).
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
            },
        );
        (id, rx, victims)
    }

    /// Removes a stream and all its watchers.
    pub fn remove_stream(&self, stream: StreamId) {
        let mut inner = self.lock();
        inner.streams.remove(&stream);
        let ids: Vec<i64> = inner
            .watchers
            .keys()
            .filter(|(s, _)| *s == stream)
            .map(|(_, w)| *w)
            .collect();
        for w in ids {
            Self::unindex(&mut inner, stream, w);
        }
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
        let (gap, revision) = match Self::read_gap(&spec, next_rev, keyspace) {
            Ok(g) => g,
            Err(compacted) => {
                Self::unindex(&mut inner, stream, watch_id);
                return Registered::Compacted(compacted);
            }
        };
        let single = spec.range.is_single_key();
        let key = spec.range.key.clone();
        let existed = inner
            .watchers
            .insert(
                (stream, watch_id),
                Watcher {
                    spec,
                    next_rev: next_rev.max(revision + 1),
                    synced: true,
                },
            )
            .is_some();
        if !existed {
            if single {
                inner
                    .by_key
                    .entry(key)
                    .or_default()
                    .push((stream, watch_id));
            } else {
                inner.ranges.push((stream, watch_id));
            }
        }
        Registered::Synced { gap, revision }
    }

    fn read_gap(
        spec: &WatchSpec,
        next_rev: i64,
        keyspace: &RwLock<Keyspace>,
    ) -> Result<(Vec<Event>, i64), i64> {
        let ks = keyspace
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let revision = ks.revision();
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
        if w.spec.range.is_single_key() {
            if let Some(v) = inner.by_key.get_mut(&w.spec.range.key) {
                v.retain(|x| *x != id);
                if v.is_empty() {
                    inner.by_key.remove(&w.spec.range.key);
                }
            }
        } else {
            inner.ranges.retain(|x| *x != id);
        }
        true
    }

    /// The stream's watchers that fell behind (still registered, unsynced).
    pub fn victims(&self, stream: StreamId) -> Vec<Victim> {
        let inner = self.lock();
        inner
            .watchers
            .iter()
            .filter(|((s, _), w)| *s == stream && !w.synced)
            .map(|((_, id), w)| Victim {
                watch_id: *id,
                spec: w.spec.clone(),
                next_rev: w.next_rev,
            })
            .collect()
    }

    /// Whether every watcher of the stream is synced.
    pub fn all_synced(&self, stream: StreamId) -> bool {
        let inner = self.lock();
        inner
            .watchers
            .iter()
            .all(|((s, _), w)| *s != stream || w.synced)
    }

    /// Queues a progress marker behind everything already handed to the
    /// stream, if every watcher of it is synced. False when it must wait
    /// (a victim is catching up, or the channel is full).
    pub fn queue_progress(&self, stream: StreamId) -> bool {
        let inner = self.lock();
        let synced = inner
            .watchers
            .iter()
            .all(|((s, _), w)| *s != stream || w.synced);
        if !synced {
            return false;
        }
        let Some(st) = inner.streams.get(&stream) else {
            return false;
        };
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
            let ranged = inner
                .ranges
                .iter()
                .filter(|id| inner.watchers[*id].spec.range.as_range().contains(key));
            for id in exact.chain(ranged) {
                let w = &inner.watchers[id];
                if w.synced && w.next_rev <= rev && w.spec.wants(e) {
                    out.entry(*id).or_default().push(e.clone());
                }
            }
        }
        for (id, evs) in out {
            let Some(stream) = inner.streams.get(&id.0) else {
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
        match Self::read_gap(&spec, next_rev, keyspace) {
            Err(compacted) => {
                Self::unindex(&mut inner, stream, watch_id);
                Some(Registered::Compacted(compacted))
            }
            Ok((gap, revision)) => {
                let w = inner.watchers.get_mut(&(stream, watch_id))?;
                w.synced = true;
                w.next_rev = next_rev.max(revision + 1);
                Some(Registered::Synced { gap, revision })
            }
        }
    }
}

fn mod_revision(e: &Event) -> i64 {
    e.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}
