//! Criterion micro-benchmarks of ferrocd's hot paths live in `benches/`:
//! `wal_group_commit` (WAL group commit against the raw fdatasync floor)
//! and `mvcc` (keyspace put/range/txn per shard count). This library is
//! empty; it exists so the package has a target besides its benches.
