//! The shards GPT-NeoX itself wrote (`../shared/fixtures/neox-reference`):
//! read them, write the same sequences back, get the same bytes; merge them.

use std::fs;
use std::path::PathBuf;

use neox_indexed::{DType, IndexedDataset, IndexedWriter, bin_path, idx_path, merge};

const NAMES: [&str; 3] = ["gpt2", "neox20b", "char"];

#[path = "../../tests/common/shared_dir.rs"]
mod shared_dir;

fn reference_dir() -> PathBuf {
    let dir = shared_dir::shared_dir().join("fixtures/neox-reference");
    assert!(
        dir.is_dir(),
        "{} is missing: these tests need the shared folder (set NEOX_SHARED)",
        dir.display()
    );
    dir
}

fn reference(name: &str) -> PathBuf {
    reference_dir().join(format!("small_{name}_text_document"))
}

#[test]
fn reference_shards_round_trip_byte_for_byte() {
    let out = tempfile::tempdir().unwrap();
    for name in NAMES {
        let ds = IndexedDataset::open(reference(name)).unwrap();
        let copy = out.path().join(name);
        let mut w = IndexedWriter::create(&copy, ds.dtype()).unwrap();
        for i in 0..ds.len() {
            w.add_tokens(&ds.get(i).unwrap().to_vec_u32()).unwrap();
            w.end_document().unwrap();
        }
        let summary = w.finish().unwrap();
        assert_eq!(summary.sequences, ds.len() as u64);
        for (ours, theirs) in [
            (bin_path(&copy), bin_path(&reference(name))),
            (idx_path(&copy), idx_path(&reference(name))),
        ] {
            assert!(
                fs::read(&ours).unwrap() == fs::read(&theirs).unwrap(),
                "{} differs from {}",
                ours.display(),
                theirs.display()
            );
        }
    }
}

#[test]
fn reference_counts_agree_with_the_file_sizes() {
    for name in NAMES {
        let prefix = reference(name);
        let ds = IndexedDataset::open(&prefix).unwrap();
        let idx_len = fs::metadata(idx_path(&prefix)).unwrap().len();
        let bin_len = fs::metadata(bin_path(&prefix)).unwrap().len();
        // One sequence per document: idx = 34 + 12 N + 8 (N + 1).
        let n = (idx_len - 42) / 20;
        assert_eq!(ds.len() as u64, n, "{name}");
        assert_eq!(ds.num_documents() as u64, n, "{name}");
        assert_eq!(ds.dtype(), DType::U16, "{name}");
        assert_eq!(ds.num_tokens(), bin_len / 2, "{name}");
        let total: u64 = ds.sizes().iter().map(|s| s as u64).sum();
        assert_eq!(total, ds.num_tokens(), "{name}");
        let docs: Vec<i64> = (0..=n as i64).collect();
        assert_eq!(ds.doc_idx().to_vec(), docs, "{name}");
        // Every token the reader hands out, read again straight from the file.
        let bin = fs::read(bin_path(&prefix)).unwrap();
        let mut at = 0;
        for i in 0..ds.len() {
            let tokens = ds.get(i).unwrap();
            let expect: Vec<u32> = bin[at..at + 2 * tokens.len()]
                .chunks(2)
                .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                .collect();
            assert_eq!(tokens.to_vec_u32(), expect, "{name} sequence {i}");
            at += 2 * tokens.len();
        }
    }
}

#[test]
fn merging_reference_shards_keeps_every_document_boundary() {
    let out = tempfile::tempdir().unwrap();
    let merged = out.path().join("merged");
    let inputs: Vec<PathBuf> = NAMES.iter().map(|n| reference(n)).collect();
    let summary = merge(&inputs, &merged).unwrap();
    let parts: Vec<IndexedDataset> = inputs
        .iter()
        .map(|p| IndexedDataset::open(p).unwrap())
        .collect();
    let all = IndexedDataset::open(&merged).unwrap();
    let n: usize = parts.iter().map(|p| p.len()).sum();
    assert_eq!(all.len(), n);
    assert_eq!(summary.sequences, n as u64);
    assert_eq!(summary.documents, n as u64);
    assert_eq!(all.num_documents(), n);
    assert_eq!(all.doc_idx().to_vec(), (0..=n as i64).collect::<Vec<_>>());
    let mut i = 0;
    for part in &parts {
        for j in 0..part.len() {
            assert_eq!(
                all.get(i).unwrap(),
                part.get(j).unwrap(),
                "merged sequence {i}"
            );
            i += 1;
        }
    }
    let bin: Vec<u8> = inputs
        .iter()
        .flat_map(|p| fs::read(bin_path(p)).unwrap())
        .collect();
    assert!(
        fs::read(bin_path(&merged)).unwrap() == bin,
        "merged .bin is not the concatenation"
    );
}
