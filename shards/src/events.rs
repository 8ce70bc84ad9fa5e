//! Watch events: what each applied write changed, and the same events
//! rebuilt from MVCC history for watchers that catch up.
//!
//! An event is etcd's `mvccpb.Event`: a PUT carries the full new kv; a
//! DELETE carries only `{key, mod_revision = delete revision}`. Events of
//! one revision are ordered by sub-revision (the order of the writes in
//! the txn). `prev_kv` is not stored: the watch layer reads it at
//! `mod_revision - 1` when a watcher asks for it, as etcd does.

use crate::key_index::Version;
use crate::shard::key_value;
use crate::Keyspace;
use ferrocd_core::KeyRange;
use ferrocd_proto::mvccpb::{event::EventType, Event, KeyValue};

/// The event of one version (a put or a tombstone).
#[must_use]
pub fn event_of(key: &[u8], v: &Version) -> Event {
    if v.is_tombstone() {
        Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: key.to_vec(),
                mod_revision: v.rev.main,
                ..Default::default()
            }),
            prev_kv: None,
        }
    } else {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(key_value(key, v, true)),
            prev_kv: None,
        }
    }
}

impl Keyspace {
    /// Events of every write applied since the last call, in revision and
    /// sub-revision order (each [`Keyspace::put`], `delete_range`, `txn`
    /// appends its writes' events).
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.journal)
    }

    /// Events in `range` with revisions in `from..=to`, rebuilt from MVCC
    /// history, in (revision, sub-revision) order. Meaningful for `from`
    /// above the compaction point (older versions are gone).
    #[must_use]
    pub fn history(&self, range: &KeyRange<'_>, from: i64, to: i64) -> Vec<Event> {
        let mut found: Vec<((i64, i64), Event)> = Vec::new();
        for shard in self.shards_for_range(range) {
            shard.visit_versions(range, from, to, |key, v| {
                found.push(((v.rev.main, v.rev.sub), event_of(key, v)));
            });
        }
        found.sort_by_key(|(rev, _)| *rev);
        found.into_iter().map(|(_, e)| e).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocd_proto::etcdserverpb::{
        request_op::Request, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest,
    };

    fn put(ks: &mut Keyspace, k: &str, v: &str) {
        ks.put(&PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })
        .unwrap();
    }

    fn brief(evs: &[Event]) -> Vec<String> {
        evs.iter()
            .map(|e| {
                let kv = e.kv.as_ref().unwrap();
                format!(
                    "{}{}@{}={}",
                    if e.r#type == EventType::Put as i32 {
                        "put "
                    } else {
                        "del "
                    },
                    String::from_utf8_lossy(&kv.key),
                    kv.mod_revision,
                    String::from_utf8_lossy(&kv.value)
                )
            })
            .collect()
    }

    #[test]
    fn journal_and_history_agree_for_every_shard_count() {
        for shards in [1, 2, 8] {
            let mut ks = Keyspace::new(shards);
            put(&mut ks, "a", "1"); // 2
            put(&mut ks, "b", "2"); // 3
            ks.txn(&TxnRequest {
                success: vec![
                    RequestOp {
                        request: Some(Request::RequestPut(PutRequest {
                            key: "c".into(),
                            value: "3".into(),
                            ..Default::default()
                        })),
                    },
                    RequestOp {
                        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                            key: "a".into(),
                            ..Default::default()
                        })),
                    },
                ],
                ..Default::default()
            })
            .unwrap(); // 4: put c (sub 0), del a (sub 1)
            ks.delete_range(&DeleteRangeRequest {
                key: "nothing".into(),
                ..Default::default()
            })
            .unwrap(); // no revision, no event
            put(&mut ks, "a", "5"); // 5
            let journal = ks.take_events();
            assert!(ks.take_events().is_empty());
            let want = [
                "put a@2=1",
                "put b@3=2",
                "put c@4=3",
                "del a@4=",
                "put a@5=5",
            ];
            assert_eq!(brief(&journal), want, "shards {shards}");
            let all = KeyRange::new(b"\0", b"\0");
            assert_eq!(brief(&ks.history(&all, 1, 5)), want, "shards {shards}");
            assert_eq!(
                brief(&ks.history(&all, 4, 4)),
                want[2..4],
                "shards {shards}"
            );
            let a = KeyRange::new(b"a", b"");
            assert_eq!(
                brief(&ks.history(&a, 3, 9)),
                ["del a@4=", "put a@5=5"],
                "shards {shards}"
            );
            assert!(ks.history(&all, 6, 9).is_empty());
        }
    }
}
