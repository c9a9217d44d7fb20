//! Round trips through the writer, and every refusal of the reader.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::{IndexedWriter, WriteSummary};

fn write(prefix: &Path, dtype: DType, docs: &[Vec<u32>]) -> WriteSummary {
    let mut w = IndexedWriter::create(prefix, dtype).unwrap();
    for d in docs {
        w.add_document(d).unwrap();
    }
    w.finish().unwrap()
}

fn sample_docs() -> Vec<Vec<u32>> {
    vec![
        vec![5, 6, 7],
        vec![0],
        vec![65_535, 1, 2, 3, 4],
        vec![9; 40],
    ]
}

fn fixture(dir: &Path) -> PathBuf {
    let prefix = dir.join("shard");
    write(&prefix, DType::U16, &sample_docs());
    prefix
}

fn corruption(prefix: &Path) -> Corruption {
    match IndexedDataset::open(prefix) {
        Ok(_) => panic!("{} opened but is corrupt", prefix.display()),
        Err(e) => e
            .corruption()
            .cloned()
            .unwrap_or_else(|| panic!("not a corruption: {e}")),
    }
}

fn edit(path: PathBuf, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = fs::read(&path).unwrap();
    f(&mut b);
    fs::write(path, b).unwrap();
}

#[test]
fn round_trip_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in DType::ALL {
        let prefix = dir.path().join(dtype.name());
        let max = dtype.max_token().min(u32::MAX as u64) as u32;
        let docs = vec![vec![1, 2, max], vec![max / 2], vec![0, 0, 0, 0, 7]];
        let s = write(&prefix, dtype, &docs);
        assert_eq!((s.sequences, s.documents, s.tokens), (3, 3, 9));
        assert_eq!(s.bin_bytes, 9 * dtype.size() as u64);
        assert_eq!(s.idx_bytes, fs::metadata(idx_path(&prefix)).unwrap().len());
        let ds = IndexedDataset::open(&prefix).unwrap();
        assert_eq!(ds.dtype(), dtype);
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.num_documents(), 3);
        assert_eq!(ds.num_tokens(), 9);
        for (i, d) in docs.iter().enumerate() {
            assert_eq!(&ds.get(i).unwrap().to_vec_u32(), d, "{dtype} seq {i}");
            assert_eq!(ds.size(i).unwrap(), d.len());
        }
        assert_eq!(ds.doc_idx().to_vec(), [0, 1, 2, 3]);
        let e = dtype.size() as i64;
        assert_eq!(ds.pointers().to_vec(), [0, 3 * e, 4 * e]);
    }
}

#[test]
fn long_documents_are_little_endian_tokens_byte_for_byte_in_every_dtype() {
    // Longer than the writer's encoding chunk, with the largest token of
    // each dtype among them; the .bin must be the plain little-endian bytes.
    let dir = tempfile::tempdir().unwrap();
    for dtype in DType::ALL {
        let prefix = dir.path().join(dtype.name());
        let max = dtype.max_token().min(u32::MAX as u64) as u32;
        let doc: Vec<u32> = (0..150_001u32)
            .map(|i| (i * 7919) % max.max(1))
            .chain([max])
            .collect();
        write(&prefix, dtype, &[doc.clone(), vec![max, 0, 1]]);
        let expected: Vec<u8> = doc
            .iter()
            .chain(&[max, 0, 1])
            .flat_map(|&t| u64::from(t).to_le_bytes()[..dtype.size()].to_vec())
            .collect();
        assert!(fs::read(bin_path(&prefix)).unwrap() == expected, "{dtype}");
    }
}

#[test]
fn header_and_arrays_are_at_the_documented_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fixture(dir.path());
    let idx = fs::read(idx_path(&prefix)).unwrap();
    let docs = sample_docs();
    let n = docs.len();
    assert_eq!(idx.len(), 34 + 12 * n + 8 * (n + 1));
    assert_eq!(&idx[..9], b"MMIDIDX\0\0");
    assert_eq!(idx[17], 8);
    let at = |o: usize, w: usize| {
        let mut a = [0u8; 8];
        a[..w].copy_from_slice(&idx[o..o + w]);
        i64::from_le_bytes(a)
    };
    assert_eq!(at(18, 8), n as i64);
    assert_eq!(at(26, 8), n as i64 + 1);
    let mut pointer = 0;
    for (i, d) in docs.iter().enumerate() {
        assert_eq!(at(34 + 4 * i, 4), d.len() as i64);
        assert_eq!(at(34 + 4 * n + 8 * i, 8), pointer);
        pointer += 2 * d.len() as i64;
    }
    for d in 0..=n {
        assert_eq!(at(34 + 12 * n + 8 * d, 8), d as i64);
    }
    let bin = fs::read(bin_path(&prefix)).unwrap();
    let tokens: Vec<u32> = bin
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
        .collect();
    assert_eq!(tokens, docs.concat());
}

#[test]
fn slices_and_out_of_range_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ds = IndexedDataset::open(fixture(dir.path())).unwrap();
    assert_eq!(ds.get_slice(2, 1, 3).unwrap().to_vec_u32(), [1, 2, 3]);
    assert_eq!(ds.get_slice(2, 5, 0).unwrap().len(), 0);
    assert!(matches!(
        ds.get(4),
        Err(Error::SequenceOutOfRange {
            index: 4,
            len: 4,
            ..
        })
    ));
    assert!(matches!(
        ds.get_slice(2, 3, 3),
        Err(Error::SliceOutOfRange { size: 5, .. })
    ));
    assert!(matches!(
        ds.get_slice(2, usize::MAX, 2),
        Err(Error::SliceOutOfRange { .. })
    ));
    assert!(ds.size(usize::MAX).is_err());
    assert!(ds.pointer(4).is_err());
    assert_eq!(ds.document(3).unwrap(), 3..4);
    assert!(matches!(
        ds.document(4),
        Err(Error::DocumentOutOfRange { len: 4, .. })
    ));
    assert_eq!(ds.token_offset(4).unwrap(), ds.num_tokens());
}

#[test]
fn aligned_u16_sequences_are_borrowed() {
    let dir = tempfile::tempdir().unwrap();
    let ds = IndexedDataset::open(fixture(dir.path())).unwrap();
    for i in 0..ds.len() {
        assert!(ds.get(i).unwrap().is_borrowed(), "seq {i}");
    }
}

#[test]
fn empty_dataset_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("empty");
    let s = write(&prefix, DType::U16, &[]);
    assert_eq!(
        (s.sequences, s.documents, s.tokens, s.bin_bytes),
        (0, 0, 0, 0)
    );
    assert_eq!(fs::metadata(idx_path(&prefix)).unwrap().len(), 34 + 8);
    let ds = IndexedDataset::open(&prefix).unwrap();
    assert!(ds.is_empty());
    assert_eq!(ds.num_documents(), 0);
    assert_eq!(ds.doc_idx().to_vec(), [0]);
    assert!(ds.get(0).is_err());
}

#[test]
fn empty_documents_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("gaps");
    let s = write(&prefix, DType::U16, &[vec![], vec![1, 2], vec![], vec![3]]);
    assert_eq!(
        (s.documents, s.empty_documents_dropped, s.tokens),
        (2, 2, 3)
    );
    let ds = IndexedDataset::open(&prefix).unwrap();
    assert_eq!(ds.doc_idx().to_vec(), [0, 1, 2]);
}

#[test]
fn several_sequences_per_document_and_open_document_at_finish() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("multi");
    let mut w = IndexedWriter::create(&prefix, DType::I32).unwrap();
    w.add_tokens(&[1, 2]).unwrap();
    w.add_tokens(&[3]).unwrap();
    w.end_sequence().unwrap();
    w.end_sequence().unwrap(); // an empty sequence, as Megatron allows
    w.add_tokens(&[4]).unwrap();
    w.end_document().unwrap();
    w.add_tokens(&[5, 6]).unwrap(); // left open: finish ends it
    let s = w.finish().unwrap();
    assert_eq!((s.sequences, s.documents, s.tokens), (4, 2, 6));
    let ds = IndexedDataset::open(&prefix).unwrap();
    assert_eq!(ds.sizes().to_vec(), [3, 0, 1, 2]);
    assert_eq!(ds.doc_idx().to_vec(), [0, 3, 4]);
    assert_eq!(ds.document(0).unwrap(), 0..3);
    assert_eq!(ds.get(3).unwrap().to_vec_u32(), [5, 6]);
}

#[test]
fn token_too_large_for_dtype_is_refused_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("big");
    let mut w = IndexedWriter::create(&prefix, DType::U16).unwrap();
    w.add_tokens(&[1, 2]).unwrap();
    let e = w.add_tokens(&[3, 65_536]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TokenOutOfRange {
                token: 65_536,
                position: 3,
                ..
            }
        ),
        "{e}"
    );
    w.end_document().unwrap();
    let s = w.finish().unwrap();
    assert_eq!(s.tokens, 2);
    assert!(
        IndexedWriter::create(&prefix, DType::I8)
            .unwrap()
            .add_tokens(&[128])
            .is_err()
    );
}

#[test]
fn a_dropped_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("dropped");
    let mut w = IndexedWriter::create(&prefix, DType::U16).unwrap();
    w.add_document(&[1, 2, 3]).unwrap();
    drop(w);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn finish_replaces_an_existing_shard_and_leaves_no_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fixture(dir.path());
    write(&prefix, DType::I32, &[vec![70_000]]);
    let ds = IndexedDataset::open(&prefix).unwrap();
    assert_eq!((ds.dtype(), ds.len()), (DType::I32, 1));
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn missing_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fixture(dir.path());
    fs::remove_file(bin_path(&prefix)).unwrap();
    let e = IndexedDataset::open(&prefix).unwrap_err();
    assert!(e.to_string().contains("shard.bin"), "{e}");
    let e = IndexedDataset::open(dir.path().join("nothing")).unwrap_err();
    assert!(e.to_string().contains("nothing.idx"), "{e}");
}

#[test]
fn refuses_truncated_idx() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fixture(dir.path());
    edit(idx_path(&prefix), |b| b.truncate(b.len() - 1));
    let c = corruption(&prefix);
    assert!(
        matches!(
            c,
            Corruption::TruncatedIdx {
                sequences: 4,
                doc_idx_len: 5,
                needed: 122,
                found: 121
            }
        ),
        "{c}"
    );
    let e = IndexedDataset::open(&prefix).unwrap_err().to_string();
    assert!(
        e.contains("shard.idx: truncated: header says 4 sequences"),
        "{e}"
    );
    edit(idx_path(&prefix), |b| b.truncate(20));
    assert!(matches!(
        corruption(&prefix),
        Corruption::TruncatedHeader {
            needed: 34,
            found: 20
        }
    ));
    edit(idx_path(&prefix), |b| b.clear());
    assert!(matches!(
        corruption(&prefix),
        Corruption::TruncatedHeader { found: 0, .. }
    ));
}

#[test]
fn refuses_trailing_bytes_in_idx() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fixture(dir.path());
    edit(idx_path(&prefix), |b| b.push(0));
    assert!(matches!(
        corruption(&prefix),
        Corruption::TrailingIdx { extra: 1, .. }
    ));
}

#[test]
fn refuses_truncated_bin() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fixture(dir.path());
    edit(bin_path(&prefix), |b| b.truncate(b.len() - 2));
    let c = corruption(&prefix);
    assert!(
        matches!(
            c,
            Corruption::TruncatedBin {
                tokens: 49,
                needed: 98,
                found: 96,
                ..
            }
        ),
        "{c}"
    );
    let e = IndexedDataset::open(&prefix).unwrap_err().to_string();
    assert!(e.contains("shard.bin: truncated"), "{e}");
}

#[test]
fn refuses_trailing_bytes_in_bin() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fixture(dir.path());
    edit(bin_path(&prefix), |b| b.extend([0, 0]));
    assert!(matches!(
        corruption(&prefix),
        Corruption::TrailingBin { extra: 2, .. }
    ));
}

#[test]
fn refuses_sizes_that_overrun_the_bin() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fixture(dir.path());
    // The last size (40) becomes 1000: the sequence would run past the .bin.
    edit(idx_path(&prefix), |b| {
        b[34 + 12..34 + 16].copy_from_slice(&1000i32.to_le_bytes())
    });
    let c = corruption(&prefix);
    assert!(
        matches!(c, Corruption::TruncatedBin { needed, found: 98, .. } if needed == 2 * (9 + 1000)),
        "{c}"
    );
    // A size so large that the next pointer no longer follows.
    edit(idx_path(&prefix), |b| {
        b[34..38].copy_from_slice(&i32::MAX.to_le_bytes())
    });
    assert!(matches!(
        corruption(&prefix),
        Corruption::BadPointer { index: 1, .. }
    ));
}

#[test]
fn refuses_negative_sizes_and_bad_pointers() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fixture(dir.path());
    edit(idx_path(&prefix), |b| {
        b[38..42].copy_from_slice(&(-1i32).to_le_bytes())
    });
    assert!(matches!(
        corruption(&prefix),
        Corruption::NegativeSize {
            index: 1,
            offset: 38,
            size: -1
        }
    ));
    let prefix = fixture(dir.path());
    let ptr2 = 34 + 16 + 16;
    edit(idx_path(&prefix), |b| {
        b[ptr2..ptr2 + 8].copy_from_slice(&(1i64 << 40).to_le_bytes())
    });
    assert!(matches!(
        corruption(&prefix),
        Corruption::BadPointer {
            index: 2,
            expected: 8,
            ..
        }
    ));
}

#[test]
fn refuses_wrong_magic() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fixture(dir.path());
    edit(idx_path(&prefix), |b| b[0] = b'X');
    let c = corruption(&prefix);
    assert!(
        matches!(&c, Corruption::WrongMagic { found } if found.starts_with("XMIDIDX")),
        "{c}"
    );
    edit(idx_path(&prefix), |b| {
        *b = b"{\"not\": \"an index\"}".to_vec()
    });
    assert!(matches!(corruption(&prefix), Corruption::WrongMagic { .. }));
}

#[test]
fn refuses_old_tntidx() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fixture(dir.path());
    // TNTIDX header: magic, version u64, dtype code u64, element size u64, ...
    let mut old = b"TNTIDX\0\0".to_vec();
    old.extend(1u64.to_le_bytes());
    old.extend(8u64.to_le_bytes());
    old.extend(2u64.to_le_bytes());
    fs::write(idx_path(&prefix), old).unwrap();
    assert_eq!(corruption(&prefix), Corruption::OldTntIdx);
    let e = IndexedDataset::open(&prefix).unwrap_err().to_string();
    assert!(e.contains("TNTIDX"), "{e}");
}

#[test]
fn refuses_wrong_version() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fixture(dir.path());
    edit(idx_path(&prefix), |b| {
        b[9..17].copy_from_slice(&2u64.to_le_bytes())
    });
    assert_eq!(corruption(&prefix), Corruption::WrongVersion { found: 2 });
}

#[test]
fn refuses_unknown_and_float_dtypes() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fixture(dir.path());
    for code in [0u8, 6, 7, 9, 200] {
        edit(idx_path(&prefix), |b| b[17] = code);
        assert_eq!(corruption(&prefix), Corruption::UnknownDtype { code });
    }
}

#[test]
fn refuses_impossible_counts() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fixture(dir.path());
    edit(idx_path(&prefix), |b| {
        b[18..26].copy_from_slice(&u64::MAX.to_le_bytes())
    });
    assert!(matches!(
        corruption(&prefix),
        Corruption::ImpossibleCounts { .. }
    ));
    let prefix = fixture(dir.path());
    edit(idx_path(&prefix), |b| {
        b[18..26].copy_from_slice(&1_000_000u64.to_le_bytes())
    });
    assert!(matches!(
        corruption(&prefix),
        Corruption::TruncatedIdx {
            sequences: 1_000_000,
            ..
        }
    ));
}

#[test]
fn refuses_bad_doc_idx() {
    let dir = tempfile::tempdir().unwrap();
    let doc = |d: usize| 34 + 12 * 4 + 8 * d;
    let cases: [(usize, i64); 3] = [(0, 1), (2, 0), (4, 5)];
    for (entry, value) in cases {
        let prefix = fixture(dir.path());
        edit(idx_path(&prefix), |b| {
            b[doc(entry)..doc(entry) + 8].copy_from_slice(&value.to_le_bytes())
        });
        let c = corruption(&prefix);
        match entry {
            0 => assert!(matches!(c, Corruption::DocIdxStart { found: 1, .. }), "{c}"),
            _ => assert!(
                matches!(c, Corruption::DocIdxOrder { index, found, .. } if index == entry as u64 && found == value),
                "{c}"
            ),
        }
    }
    // D = 0: no leading 0 at all.
    let prefix = fixture(dir.path());
    edit(idx_path(&prefix), |b| {
        b[26..34].copy_from_slice(&0u64.to_le_bytes());
        b.truncate(34 + 12 * 4);
    });
    assert_eq!(corruption(&prefix), Corruption::EmptyDocIdx);
}

#[test]
fn accepts_gpt_neox_merged_files_whose_doc_idx_is_only_zero() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fixture(dir.path());
    edit(idx_path(&prefix), |b| {
        b[26..34].copy_from_slice(&1u64.to_le_bytes());
        b.truncate(34 + 12 * 4 + 8);
    });
    let ds = IndexedDataset::open(&prefix).unwrap();
    assert_eq!((ds.len(), ds.num_documents()), (4, 0));
}

#[test]
fn datasets_and_errors_can_cross_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<IndexedDataset>();
    send_sync::<Error>();
    fn send<T: Send>() {}
    send::<IndexedWriter>();
}

#[cfg(unix)]
#[test]
fn finished_shards_are_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("shared");
    let mut w = IndexedWriter::create(&prefix, DType::U16).unwrap();
    w.add_tokens(&[1, 2, 3]).unwrap();
    w.end_document().unwrap();
    w.finish().unwrap();
    for path in [bin_path(&prefix), idx_path(&prefix)] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o044, 0o044, "{} has mode {mode:o}", path.display());
    }
}

#[test]
fn refuses_crafted_counts_whose_offsets_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fixture(dir.path());
    let max = u64::MAX;
    for (n, d) in [
        (max / 12 + 1, 1),    // 12 N overflows
        (max / 12, 1),        // 12 N + 8 D overflows
        (1, max / 8 + 1),     // 8 D overflows
        ((max - 33) / 12, 3), // only the header's 34 bytes overflow it
        (1 << 62, 1 << 62),   // both huge
        (0, max),
    ] {
        edit(idx_path(&prefix), |b| {
            b[18..26].copy_from_slice(&n.to_le_bytes());
            b[26..34].copy_from_slice(&d.to_le_bytes());
        });
        assert_eq!(
            corruption(&prefix),
            Corruption::ImpossibleCounts {
                sequences: n,
                doc_idx_len: d
            },
            "N {n}, D {d}"
        );
    }
}

#[test]
fn sizes_that_pass_an_i64_offset_are_refused() {
    // No file small enough to ship reaches 2^63 bytes: start the walk near it.
    let mut end = SequenceEnd::new(DType::I64, 3);
    end.bytes = i64::MAX as u64 - 8 * 10;
    end.follow(7, 10, i64::MAX - 80).unwrap();
    assert_eq!(end.bytes, i64::MAX as u64);
    assert_eq!(
        end.follow(8, 1, i64::MAX),
        Err(Corruption::OffsetOverflow {
            index: 8,
            offset: 34 + 4 * 8
        })
    );
    let e = Error::corrupt(
        Path::new("x.idx"),
        Corruption::OffsetOverflow {
            index: 8,
            offset: 66,
        },
    );
    assert_eq!(
        e.to_string(),
        "x.idx: size of sequence 8 (byte 66) takes the .bin past byte 9223372036854775807, \
         the largest offset an i64 pointer holds"
    );
}
