//! The smaller hot paths around the store: sequencer stamping, the
//! cross-shard range merge, the watch event journal and history replay,
//! and protobuf decode/encode of the most common requests and answers.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrocd_core::{KeyRange, Revision, Sequencer};
use ferrocd_proto::etcdserverpb::{PutRequest, RangeResponse, ResponseHeader};
use ferrocd_proto::mvccpb::KeyValue;
use ferrocd_proto::prost::Message;
use ferrocd_shards::{merge_by_key, Keyspace, ShardRange};
use std::hint::black_box;

fn kv(i: usize) -> KeyValue {
    KeyValue {
        key: format!("/registry/pods/default/pod-{i:06}").into_bytes(),
        create_revision: i as i64 + 2,
        mod_revision: i as i64 + 2,
        version: 1,
        value: vec![b'v'; 256],
        lease: 0,
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("hot_paths");
    g.throughput(Throughput::Elements(1));

    let mut seq = Sequencer::resume(Revision(1), Revision(-1));
    g.bench_function("sequencer_on_applied", |b| {
        b.iter(|| black_box(seq.on_applied(black_box(true))));
    });

    // A LIST page of 500 from N shards: per-shard sorted parts, merged
    // (the time includes cloning the 1,000 input kvs).
    for shards in [2usize, 8] {
        let parts: Vec<ShardRange> = (0..shards)
            .map(|s| ShardRange {
                kvs: (0..1000).filter(|i| i % shards == s).map(kv).collect(),
                count: (1000 / shards) as i64,
            })
            .collect();
        g.bench_with_input(
            BenchmarkId::new("range_merge_500", shards),
            &shards,
            |b, _| {
                b.iter(|| black_box(merge_by_key(parts.clone(), 501)));
            },
        );
    }

    let put = PutRequest {
        key: b"/registry/leases/kube-node-lease/node-1".to_vec(),
        value: vec![b'v'; 256],
        ..Default::default()
    };
    let put_bytes = put.encode_to_vec();
    g.bench_function("decode_put_request", |b| {
        b.iter(|| black_box(PutRequest::decode(black_box(&put_bytes[..])).expect("decodes")));
    });
    let page = RangeResponse {
        header: Some(ResponseHeader {
            revision: 1000,
            ..Default::default()
        }),
        kvs: (0..100).map(kv).collect(),
        more: true,
        count: 1000,
    };
    g.bench_function("encode_range_response_100", |b| {
        b.iter(|| black_box(page.encode_to_vec()));
    });

    // The watch path: events journaled by a put, and catching up a
    // prefix watcher from history.
    let mut ks = Keyspace::new(2);
    for i in 0..10_000 {
        ks.put(&PutRequest {
            key: kv(i).key,
            value: vec![b'v'; 256],
            ..Default::default()
        })
        .expect("put");
    }
    ks.take_events();
    g.bench_function("put_and_take_events", |b| {
        b.iter(|| {
            ks.put(&put).expect("put");
            black_box(ks.take_events())
        });
    });
    let rev = ks.revision();
    let prefix = b"/registry/pods/".to_vec();
    let end = ferrocd_core::prefix_end(&prefix);
    g.bench_function("history_prefix_last_100_revisions", |b| {
        b.iter(|| black_box(ks.history(&KeyRange::new(&prefix, &end), rev - 100, rev)));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
