//! Keyspace hot paths per operation and per shard count: put, single-key
//! get, prefix range with limit (the Kubernetes LIST page), and the
//! Kubernetes optimistic update (txn: compare mod_revision, then put).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrocd_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request,
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use ferrocd_shards::Keyspace;
use std::hint::black_box;

const KEYS: usize = 10_000;
const VALUE_BYTES: usize = 256;
const SHARD_COUNTS: [u16; 3] = [1, 2, 8];

fn key(i: usize) -> Vec<u8> {
    format!("/registry/pods/default/pod-{i:06}").into_bytes()
}

fn loaded(shards: u16) -> Keyspace {
    let mut ks = Keyspace::new(shards);
    for i in 0..KEYS {
        ks.put(&PutRequest {
            key: key(i),
            value: vec![b'v'; VALUE_BYTES],
            ..Default::default()
        })
        .expect("put");
    }
    ks
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("mvcc");
    g.throughput(Throughput::Elements(1));
    for shards in SHARD_COUNTS {
        let mut ks = loaded(shards);
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::new("put", shards), &shards, |b, _| {
            b.iter(|| {
                i = (i + 7919) % KEYS;
                black_box(
                    ks.put(&PutRequest {
                        key: key(i),
                        value: vec![b'w'; VALUE_BYTES],
                        ..Default::default()
                    })
                    .expect("put"),
                );
            });
        });
        g.bench_with_input(BenchmarkId::new("get", shards), &shards, |b, _| {
            b.iter(|| {
                i = (i + 7919) % KEYS;
                black_box(ks.range(&RangeRequest {
                    key: key(i),
                    ..Default::default()
                }))
                .expect("get");
            });
        });
        g.bench_with_input(
            BenchmarkId::new("list_page_100", shards),
            &shards,
            |b, _| {
                b.iter(|| {
                    black_box(ks.range(&RangeRequest {
                        key: b"/registry/pods/default/pod-0050".to_vec(),
                        range_end: b"/registry/pods/default/pod-0060".to_vec(),
                        limit: 100,
                        ..Default::default()
                    }))
                    .expect("range");
                });
            },
        );
        g.bench_with_input(
            BenchmarkId::new("txn_optimistic_put", shards),
            &shards,
            |b, _| {
                b.iter(|| {
                    i = (i + 7919) % KEYS;
                    let k = key(i);
                    let rev = ks
                        .range(&RangeRequest {
                            key: k.clone(),
                            ..Default::default()
                        })
                        .expect("get")
                        .kvs[0]
                        .mod_revision;
                    let put = PutRequest {
                        key: k.clone(),
                        value: vec![b'x'; VALUE_BYTES],
                        ..Default::default()
                    };
                    let get = RangeRequest {
                        key: k.clone(),
                        ..Default::default()
                    };
                    let resp = ks
                        .txn(&TxnRequest {
                            compare: vec![Compare {
                                key: k,
                                target: CompareTarget::Mod as i32,
                                result: CompareResult::Equal as i32,
                                target_union: Some(TargetUnion::ModRevision(rev)),
                                range_end: vec![],
                            }],
                            success: vec![RequestOp {
                                request: Some(Request::RequestPut(put)),
                            }],
                            failure: vec![RequestOp {
                                request: Some(Request::RequestRange(get)),
                            }],
                        })
                        .expect("txn");
                    assert!(resp.succeeded);
                });
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
