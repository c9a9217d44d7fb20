//! Merge: doc_idx and pointers shifted, dtypes checked, output atomic.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::{DType, Error, IndexedWriter};

fn shard(dir: &Path, name: &str, dtype: DType, docs: &[&[&[u32]]]) -> PathBuf {
    let prefix = dir.join(name);
    let mut w = IndexedWriter::create(&prefix, dtype).unwrap();
    for doc in docs {
        for seq in *doc {
            w.add_tokens(seq).unwrap();
            w.end_sequence().unwrap();
        }
        w.end_document().unwrap();
    }
    w.finish().unwrap();
    prefix
}

#[test]
fn doc_idx_and_pointers_are_shifted_per_input() {
    let dir = tempfile::tempdir().unwrap();
    // a: 2 documents (2 + 1 sequences); b: 1 document of 3 sequences; c: empty.
    let a = shard(
        dir.path(),
        "a",
        DType::U16,
        &[&[&[1, 2], &[3]], &[&[4, 5, 6]]],
    );
    let b = shard(dir.path(), "b", DType::U16, &[&[&[7], &[8, 9], &[10]]]);
    let c = shard(dir.path(), "c", DType::U16, &[]);
    let out = dir.path().join("out");
    let s = merge(&[a, c, b], &out).unwrap();
    assert_eq!((s.sequences, s.documents, s.tokens), (6, 3, 10));
    assert_eq!(s.idx_bytes, fs::metadata(idx_path(&out)).unwrap().len());
    assert_eq!(s.bin_bytes, 20);
    let ds = IndexedDataset::open(&out).unwrap();
    assert_eq!(ds.doc_idx().to_vec(), [0, 2, 3, 6]);
    assert_eq!(ds.sizes().to_vec(), [2, 1, 3, 1, 2, 1]);
    assert_eq!(ds.pointers().to_vec(), [0, 4, 6, 12, 14, 18]);
    let all: Vec<u32> = (0..ds.len())
        .flat_map(|i| ds.get(i).unwrap().to_vec_u32())
        .collect();
    assert_eq!(all, (1..=10).collect::<Vec<_>>());
}

#[test]
fn different_dtypes_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let a = shard(dir.path(), "a", DType::U16, &[&[&[1]]]);
    let b = shard(dir.path(), "b", DType::I32, &[&[&[1]]]);
    let out = dir.path().join("out");
    let e = merge(&[a, b], &out).unwrap_err();
    assert!(
        matches!(
            e,
            Error::DtypeMismatch {
                expected: DType::U16,
                found: DType::I32,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("b.idx"), "{e}");
    assert!(!bin_path(&out).exists() && !idx_path(&out).exists());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 4);
}

#[test]
fn no_inputs_and_corrupt_inputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    assert!(matches!(merge(&[], &out), Err(Error::NoInputs { .. })));
    let a = shard(dir.path(), "a", DType::U16, &[&[&[1, 2]]]);
    fs::write(bin_path(&a), [0u8]).unwrap();
    let e = merge(&[a], &out).unwrap_err();
    assert!(e.corruption().is_some(), "{e}");
    assert!(!idx_path(&out).exists());
}

#[test]
fn merging_one_shard_reproduces_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = shard(
        dir.path(),
        "a",
        DType::I32,
        &[&[&[1, 70_000]], &[&[3], &[]]],
    );
    let out = dir.path().join("out");
    merge(std::slice::from_ref(&a), &out).unwrap();
    assert_eq!(
        fs::read(idx_path(&out)).unwrap(),
        fs::read(idx_path(&a)).unwrap()
    );
    assert_eq!(
        fs::read(bin_path(&out)).unwrap(),
        fs::read(bin_path(&a)).unwrap()
    );
}
