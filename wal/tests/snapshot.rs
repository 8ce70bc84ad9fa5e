//! Snapshot files: round trip, atomicity, corruption detection, cleanup.

use ferrocd_wal::io::{Crash, FileSystem, MemFs};
use ferrocd_wal::snapshot::{
    decode_snapshot_file, snapshot_name, SnapshotDir, SnapshotMeta, SNAPSHOT_HEADER_BYTES,
};
use ferrocd_wal::SnapshotError;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Clone)]
#[rkyv(compare(PartialEq), derive(Debug))]
struct Kv {
    key: String,
    value: Vec<u8>,
    mod_revision: i64,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Clone)]
#[rkyv(compare(PartialEq), derive(Debug))]
struct State {
    revision: i64,
    kvs: Vec<Kv>,
}

fn state(n: usize) -> State {
    State {
        revision: n as i64 * 10,
        kvs: (0..n)
            .map(|i| Kv {
                key: format!("key-{i}"),
                value: vec![i as u8; i % 50],
                mod_revision: i as i64,
            })
            .collect(),
    }
}

fn meta(index: u64) -> SnapshotMeta {
    SnapshotMeta { index, term: 3 }
}

#[test]
fn round_trip_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut snaps = SnapshotDir::open(dir.path()).unwrap();
    assert!(snaps.load::<State>().unwrap().is_none());
    let s = state(100);
    let name = snaps.save(meta(42), &s).unwrap();
    assert_eq!(name, snapshot_name(42));
    assert_eq!(name, "000000000000002a.snap");
    let loaded = snaps.load::<State>().unwrap().unwrap();
    assert_eq!(loaded.meta, meta(42));
    assert_eq!(loaded.file, name);
    assert_eq!(loaded.archived().revision, 1000);
    assert_eq!(loaded.archived().kvs.len(), 100);
    assert_eq!(loaded.archived().kvs[7].key.as_str(), "key-7");
    assert_eq!(*loaded.archived(), s);
    assert_eq!(loaded.deserialize().unwrap(), s);
    // A fresh handle (restart) sees the same.
    let mut again = SnapshotDir::open(dir.path()).unwrap();
    assert_eq!(
        again
            .load::<State>()
            .unwrap()
            .unwrap()
            .deserialize()
            .unwrap(),
        s
    );
}

#[test]
fn images_larger_than_a_write_chunk_round_trip_and_are_removed() {
    // About 19 MiB of values: several write-back chunks on save and several
    // trim steps on removal, on a real directory (sync_file_range, set_len).
    let big = State {
        revision: 9,
        kvs: (0..300)
            .map(|i| Kv {
                key: format!("key-{i}"),
                value: vec![(i % 251) as u8; 64 * 1024],
                mod_revision: i,
            })
            .collect(),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut snaps = SnapshotDir::open(dir.path()).unwrap();
    snaps.save(meta(10), &big).unwrap();
    let bytes = std::fs::metadata(dir.path().join(snapshot_name(10)))
        .unwrap()
        .len();
    assert!(bytes > 4 * ferrocd_wal::snapshot::SNAPSHOT_WRITE_CHUNK_BYTES as u64);
    assert!(bytes > ferrocd_wal::snapshot::SNAPSHOT_TRIM_STEP_BYTES);
    let loaded = snaps.load::<State>().unwrap().unwrap();
    assert_eq!(loaded.deserialize().unwrap(), big);
    snaps.save(meta(11), &state(3)).unwrap();
    assert_eq!(
        snaps.remove_older_than(11).unwrap(),
        vec![snapshot_name(10)]
    );
    assert!(!dir.path().join(snapshot_name(10)).exists());
    assert_eq!(
        snaps
            .load::<State>()
            .unwrap()
            .unwrap()
            .deserialize()
            .unwrap(),
        state(3)
    );
}

#[test]
fn newest_wins_and_older_can_be_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut snaps = SnapshotDir::open(dir.path()).unwrap();
    for (i, idx) in [5u64, 300, 17].into_iter().enumerate() {
        snaps.save(meta(idx), &state(i + 1)).unwrap();
    }
    let newest = snaps.load::<State>().unwrap().unwrap();
    assert_eq!(newest.meta.index, 300);
    assert_eq!(newest.deserialize().unwrap(), state(2));
    let removed = snaps.remove_older_than(300).unwrap();
    assert_eq!(removed, vec![snapshot_name(17), snapshot_name(5)]);
    assert_eq!(snaps.list().unwrap(), vec![(300, snapshot_name(300))]);
}

fn corrupt_newest(mutate: impl Fn(&mut Vec<u8>)) -> SnapshotError {
    let dir = tempfile::tempdir().unwrap();
    let mut snaps = SnapshotDir::open(dir.path()).unwrap();
    snaps.save(meta(10), &state(3)).unwrap();
    snaps.save(meta(20), &state(30)).unwrap();
    let path = dir.path().join(snapshot_name(20));
    let mut bytes = std::fs::read(&path).unwrap();
    mutate(&mut bytes);
    std::fs::write(&path, &bytes).unwrap();
    let err = snaps.load::<State>().unwrap_err();
    match &err {
        SnapshotError::Corrupt { file, .. } => assert_eq!(file, &snapshot_name(20)),
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(err.to_string().contains(&snapshot_name(20)));
    // The explicit fallback finds the older valid snapshot and reports the skipped one.
    let (older, skipped) = snaps.load_newest_valid::<State>().unwrap();
    assert_eq!(older.unwrap().deserialize().unwrap(), state(3));
    assert_eq!(skipped.len(), 1);
    err
}

#[test]
fn corrupt_body_is_detected() {
    let e = corrupt_newest(|b| b[SNAPSHOT_HEADER_BYTES + 40] ^= 0x08);
    assert!(e.to_string().contains("body CRC32C"), "{e}");
}

#[test]
fn corrupt_header_is_detected() {
    for at in [0usize, 9, 17, 25, 33, 41, 45] {
        corrupt_newest(|b| b[at] ^= 0x01);
    }
}

#[test]
fn truncated_snapshot_is_detected() {
    corrupt_newest(|b| b.truncate(b.len() - 1));
    corrupt_newest(|b| b.truncate(SNAPSHOT_HEADER_BYTES - 1));
    corrupt_newest(|b| b.clear());
}

#[test]
fn crc_valid_but_invalid_archive_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let mut snaps = SnapshotDir::open(dir.path()).unwrap();
    // Well-framed (correct CRCs) but the body is not an archived State.
    snaps.save_bytes(meta(9), &[0xffu8; 64]).unwrap();
    match snaps.load::<State>().unwrap_err() {
        SnapshotError::Corrupt { file, reason } => {
            assert_eq!(file, snapshot_name(9));
            assert!(reason.contains("archive validation"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
}

#[test]
fn decoder_never_panics_on_garbage() {
    let mut x = 0x1234_5678_9abc_def0u64;
    for len in 0..200 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(decode_snapshot_file(&bytes).is_err());
        let _ = ferrocd_wal::snapshot::decode_frames(&bytes);
    }
}

#[test]
fn save_is_atomic_under_crashes() {
    let fs = MemFs::new();
    let mut snaps = SnapshotDir::with_fs(fs.clone()).unwrap();
    snaps.save(meta(1), &state(2)).unwrap();
    // Failed fsync of the tmp file: the save fails and leaves no new snapshot.
    fs.fail_next_sync(libc::EIO);
    assert!(matches!(
        snaps.save(meta(2), &state(5)),
        Err(SnapshotError::Io { .. })
    ));
    assert_eq!(snaps.list().unwrap(), vec![(1, snapshot_name(1))]);
    // A save that completed survives a crash.
    snaps.save(meta(3), &state(7)).unwrap();
    fs.crash(Crash::DropUnsynced);
    let mut snaps = SnapshotDir::with_fs(fs.clone()).unwrap();
    assert_eq!(
        snaps
            .load::<State>()
            .unwrap()
            .unwrap()
            .deserialize()
            .unwrap(),
        state(7)
    );
    // Crash in the middle of a save (tmp written, not renamed): the tmp is
    // cleaned up and the previous snapshot is loaded.
    let mut raw = fs.clone();
    let f = raw.create("0000000000000004.snap.tmp").unwrap();
    raw.write_at(f, 0, b"partial").unwrap();
    raw.sync(f).unwrap();
    raw.sync_dir().unwrap();
    fs.crash(Crash::DropUnsynced);
    let mut snaps = SnapshotDir::with_fs(fs.clone()).unwrap();
    assert!(!fs.names().iter().any(|n| n.ends_with(".tmp")));
    assert_eq!(snaps.load::<State>().unwrap().unwrap().meta.index, 3);
    // Renamed but the directory not yet synced: the crash forgets the new name.
    let body = rkyv::to_bytes::<rkyv::rancor::Error>(&state(9)).unwrap();
    let hdr = ferrocd_wal::snapshot::encode_snapshot_header(meta(5), &body);
    let f = raw.create("0000000000000005.snap.tmp").unwrap();
    raw.write_at(f, 0, &hdr).unwrap();
    raw.write_at(f, SNAPSHOT_HEADER_BYTES as u64, &body)
        .unwrap();
    raw.sync(f).unwrap();
    raw.rename("0000000000000005.snap.tmp", "0000000000000005.snap")
        .unwrap();
    fs.crash(Crash::DropUnsynced);
    let mut snaps = SnapshotDir::with_fs(fs).unwrap();
    assert_eq!(snaps.load::<State>().unwrap().unwrap().meta.index, 3);
}

#[test]
fn header_index_must_match_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut snaps = SnapshotDir::open(dir.path()).unwrap();
    snaps.save(meta(8), &state(1)).unwrap();
    std::fs::rename(
        dir.path().join(snapshot_name(8)),
        dir.path().join(snapshot_name(80)),
    )
    .unwrap();
    assert!(matches!(
        snaps.load::<State>().unwrap_err(),
        SnapshotError::Corrupt { .. }
    ));
}

#[test]
fn chunked_snapshot_streams_and_reads_back_chunk_by_chunk() {
    // 40 chunks of ~300 KiB: several write-back pieces, none of them the
    // whole body.
    let dir = tempfile::tempdir().unwrap();
    let mut snaps = SnapshotDir::open(dir.path()).unwrap();
    let chunks: Vec<State> = (0..40)
        .map(|c| State {
            revision: c,
            kvs: (0..30)
                .map(|i| Kv {
                    key: format!("c{c}-k{i}"),
                    value: vec![(c + i) as u8; 10_000],
                    mod_revision: i,
                })
                .collect(),
        })
        .collect();
    let mut w = snaps.writer(meta(77)).unwrap();
    w.append(&state(3)).unwrap();
    for c in &chunks {
        w.append(c).unwrap();
    }
    // Nothing visible under the final name before finish.
    assert!(snaps_names(dir.path()).iter().all(|n| n.ends_with(".tmp")));
    let name = w.finish().unwrap();
    assert_eq!(snaps_names(dir.path()), vec![name.clone()]);
    let loaded = snaps.load::<State>().unwrap().unwrap();
    assert_eq!(loaded.deserialize().unwrap(), state(3));
    assert_eq!(loaded.chunk_count(), 40);
    let mut scratch = rkyv::util::AlignedVec::new();
    for (i, c) in chunks.iter().enumerate() {
        let archived = loaded.chunk::<State>(i, &mut scratch).unwrap();
        assert_eq!(*archived, *c, "chunk {i}");
    }
    // A chunk of the wrong type fails validation with the chunk named.
    let mut w = snaps.writer(meta(78)).unwrap();
    w.append(&state(1)).unwrap();
    w.append_bytes(&[0xff; 40]).unwrap();
    w.finish().unwrap();
    let loaded = snaps.load::<State>().unwrap().unwrap();
    match loaded.chunk::<State>(0, &mut scratch).unwrap_err() {
        SnapshotError::Corrupt { file, reason } => {
            assert_eq!(file, snapshot_name(78));
            assert!(reason.contains("chunk 0"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
}

fn snaps_names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn an_unfinished_writer_leaves_nothing_and_a_headless_one_is_refused() {
    let fs = MemFs::new();
    let mut snaps = SnapshotDir::with_fs(fs.clone()).unwrap();
    {
        let mut w = snaps.writer(meta(4)).unwrap();
        w.append(&state(5)).unwrap();
        // Dropped: abandoned.
    }
    assert!(fs.names().is_empty(), "{:?}", fs.names());
    let w = snaps.writer(meta(4)).unwrap();
    assert!(matches!(w.finish(), Err(SnapshotError::Serialize(_))));
    assert!(fs.names().is_empty(), "{:?}", fs.names());
    assert!(snaps.load::<State>().unwrap().is_none());
}

#[test]
fn frame_lengths_that_run_past_the_body_are_corruption() {
    use ferrocd_wal::snapshot::decode_frames;
    assert!(decode_frames(&[]).is_err());
    assert!(decode_frames(&[1, 0, 0]).is_err());
    assert!(decode_frames(&u64::MAX.to_le_bytes()).is_err());
    let mut body = 3u64.to_le_bytes().to_vec();
    body.extend_from_slice(b"abc");
    assert_eq!(decode_frames(&body).unwrap(), vec![8..11]);
    body.extend_from_slice(&4u64.to_le_bytes());
    body.extend_from_slice(b"xyz");
    assert!(decode_frames(&body).is_err());
    // A CRC-valid file whose frame length lies is refused at load.
    let dir = tempfile::tempdir().unwrap();
    let mut snaps = SnapshotDir::open(dir.path()).unwrap();
    let hdr = ferrocd_wal::snapshot::encode_snapshot_header(meta(6), &body);
    let mut file = hdr.to_vec();
    file.extend_from_slice(&body);
    std::fs::write(dir.path().join(snapshot_name(6)), file).unwrap();
    match snaps.load::<State>().unwrap_err() {
        SnapshotError::Corrupt { reason, .. } => assert!(reason.contains("runs past"), "{reason}"),
        other => panic!("expected Corrupt, got {other}"),
    }
}

#[test]
fn another_format_version_is_refused_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut snaps = SnapshotDir::open(dir.path()).unwrap();
    snaps.save(meta(10), &state(3)).unwrap();
    // A newer file of format 1 (the single-archive format), header intact.
    let path = dir.path().join(snapshot_name(20));
    let mut bytes = std::fs::read(dir.path().join(snapshot_name(10))).unwrap();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    bytes[16..24].copy_from_slice(&20u64.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[0..44]);
    bytes[44..48].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    match snaps.load_newest_valid::<State>() {
        Err(SnapshotError::Unsupported {
            file,
            version,
            supported,
        }) => {
            assert_eq!(
                (file.as_str(), version, supported),
                (snapshot_name(20).as_str(), 1, 2)
            );
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}
