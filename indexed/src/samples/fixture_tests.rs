//! The index, samples and blend of `../shared/fixtures/neox-reference/`
//! (made by GPT-NeoX itself), reproduced byte for byte.

use std::path::PathBuf;
use std::sync::Arc;

use super::npy::{NpyFile, to_npy_bytes};
use super::*;
use crate::IndexedDataset;

#[path = "../../../tests/common/shared_dir.rs"]
mod shared_dir;

fn reference() -> PathBuf {
    let dir = shared_dir::shared_dir().join("fixtures/neox-reference");
    assert!(
        dir.join("index").is_dir(),
        "the shared fixtures are missing: expected {} (set NEOX_SHARED)",
        dir.display()
    );
    dir
}

const STEM: &str = "small_neox20b_text_document";

/// (split, seq_length, samples asked, seed) of the two reference indexes.
const CONFIGS: [(&str, u32, u64, u32); 2] =
    [("969,30,1", 2048, 64, 1234), ("949,50,1", 512, 2000, 4321)];

fn fixture(name: &str) -> Vec<u8> {
    let path = reference().join("index").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn index_name(seq: u32, samples: u64, seed: u32, what: &str) -> String {
    format!("{STEM}_train_indexmap_{samples}ns_{seq}sl_{seed}s_packedpi_ac_{what}.npy")
}

fn open_data() -> Arc<IndexedDataset> {
    Arc::new(IndexedDataset::open(reference().join(STEM)).unwrap())
}

fn train_spec(data: &IndexedDataset, split: &str, seq: u32, samples: u64, seed: u32) -> IndexSpec {
    IndexSpec {
        documents: Split::parse(split, data.len()).unwrap().train(),
        seq_length: seq,
        num_samples: Some(samples),
        num_epochs: None,
        seed,
    }
}

#[test]
fn the_three_arrays_equal_gpt_neox_s_files() {
    let data = open_data();
    let sizes = data.sizes().to_vec();
    for (split, seq, samples, seed) in CONFIGS {
        let index =
            build_sample_index(&sizes, &train_spec(&data, split, seq, samples, seed)).unwrap();
        assert_eq!(
            to_npy_bytes(&[index.doc_idx.len()], &index.doc_idx),
            fixture(&index_name(seq, samples, seed, "doc_idx")),
            "doc_idx, seq {seq}"
        );
        let rows = index.sample_idx.rows();
        let SampleIdx::I32(sample_idx) = &index.sample_idx else {
            panic!("expected int32 sample_idx")
        };
        assert_eq!(
            to_npy_bytes(&[rows, 2], sample_idx),
            fixture(&index_name(seq, samples, seed, "sample_idx")),
            "sample_idx, seq {seq}"
        );
        let ShuffleIdx::U32(shuffle_idx) = &index.shuffle_idx else {
            panic!("expected uint32 shuffle_idx")
        };
        assert_eq!(
            to_npy_bytes(&[shuffle_idx.len()], shuffle_idx),
            fixture(&index_name(seq, samples, seed, "shuffle_idx")),
            "shuffle_idx, seq {seq}"
        );
    }
}

#[test]
fn the_epochs_and_counts_match_the_readme() {
    let data = open_data();
    let sizes = data.sizes().to_vec();
    let expected = [(1, 204), (3, 2402)];
    for ((split, seq, samples, seed), (epochs, total)) in CONFIGS.into_iter().zip(expected) {
        let index =
            build_sample_index(&sizes, &train_spec(&data, split, seq, samples, seed)).unwrap();
        assert_eq!((index.num_epochs, index.total_samples()), (epochs, total));
    }
}

#[test]
fn gpt_dataset_writes_the_same_cache_and_serves_the_same_tokens() {
    let data = open_data();
    for (split, seq, samples, seed) in CONFIGS {
        let cache = tempfile::tempdir().unwrap();
        let spec = train_spec(&data, split, seq, samples, seed);
        let ds = GptDataset::open("train", data.clone(), spec.clone(), Some(cache.path())).unwrap();
        assert_eq!(ds.origin(), &IndexOrigin::Built);
        for what in ["doc_idx", "sample_idx", "shuffle_idx"] {
            let name = index_name(seq, samples, seed, what);
            let written = std::fs::read(cache.path().join(&name)).unwrap();
            assert_eq!(written, fixture(&name), "{name}");
        }
        let first8 = NpyFile::read(&reference().join("index").join(format!(
            "{STEM}_train_indexmap_{samples}ns_{seq}sl_{seed}s_first8_samples.npy"
        )))
        .unwrap();
        assert_eq!(first8.header.shape, [8, seq as usize + 1]);
        let expected: Vec<i64> = first8.to_vec().unwrap();
        for (i, want) in expected.chunks(seq as usize + 1).enumerate() {
            assert_eq!(ds.get(i).unwrap(), want, "sample {i} at seq {seq}");
        }
        // GPT-NeoX's len() is one less than the samples built.
        assert_eq!(ds.len() as u64, ds.index().total_samples() - 1);

        // Opened again: the cache is reused, and serves the same.
        let again = GptDataset::open("train", data.clone(), spec, Some(cache.path())).unwrap();
        assert_eq!(again.origin(), &IndexOrigin::Reused);
        assert_eq!(again.get(3).unwrap(), ds.get(3).unwrap());
        // A reused index is a view of the mapped cache files, not a copy.
        assert!(again.index().is_mapped());
        assert!(!ds.index().is_mapped());
        assert_eq!(again.index(), ds.index());
    }
}

#[test]
fn gpt_neox_s_own_cache_files_are_found_and_reused() {
    let data = open_data();
    let cache = tempfile::tempdir().unwrap();
    let (split, seq, samples, seed) = CONFIGS[1];
    for what in ["doc_idx", "sample_idx", "shuffle_idx"] {
        let name = index_name(seq, samples, seed, what);
        std::fs::write(cache.path().join(&name), fixture(&name)).unwrap();
    }
    let spec = train_spec(&data, split, seq, samples, seed);
    let ds = GptDataset::open("train", data, spec, Some(cache.path())).unwrap();
    assert_eq!(ds.origin(), &IndexOrigin::Reused);
}

#[test]
fn a_cache_that_does_not_match_is_rebuilt_with_the_reason() {
    let data = open_data();
    let (split, seq, samples, seed) = CONFIGS[0];
    let spec = train_spec(&data, split, seq, samples, seed);
    let name = |what| index_name(seq, samples, seed, what);
    // Each damage, and words its reason must contain.
    let other_split = {
        let other = train_spec(&data, "949,50,1", seq, samples, seed);
        build_sample_index(&data.sizes().to_vec(), &other).unwrap()
    };
    let swapped_rows = {
        let good = build_sample_index(&data.sizes().to_vec(), &spec).unwrap();
        let SampleIdx::I32(rows) = good.sample_idx else {
            panic!("int32 expected")
        };
        let mut rows = rows.to_vec();
        rows.swap(10, 12);
        rows.swap(11, 13);
        to_npy_bytes(&[205, 2], &rows)
    };
    let damages: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "doc_idx",
            to_npy_bytes(&[other_split.doc_idx.len()], &other_split.doc_idx),
            "shape [285], expected [291]",
        ),
        (
            "doc_idx",
            to_npy_bytes(&[291], &vec![0i64; 291]),
            "dtype is '<i8', expected '<i4'",
        ),
        (
            "doc_idx",
            to_npy_bytes(&[291], &vec![5i32; 291]),
            "do not each appear",
        ),
        (
            "doc_idx",
            to_npy_bytes(&[291], &vec![291i32; 291]),
            "outside 0..291",
        ),
        ("sample_idx", swapped_rows, "row 6 "),
        (
            "sample_idx",
            to_npy_bytes(&[205, 2], &vec![0i64; 410]),
            "'<i8', expected '<i4'",
        ),
        (
            "sample_idx",
            to_npy_bytes(&[205, 2], &vec![0i32; 410]),
            "last row",
        ),
        (
            "shuffle_idx",
            to_npy_bytes(&[204], &vec![0u32; 204]),
            "repeats",
        ),
        (
            "shuffle_idx",
            fixture(&name("shuffle_idx"))[..200].to_vec(),
            "data bytes",
        ),
    ];
    for (what, bytes, reason) in damages {
        let cache = tempfile::tempdir().unwrap();
        GptDataset::open("train", data.clone(), spec.clone(), Some(cache.path())).unwrap();
        std::fs::write(cache.path().join(name(what)), bytes).unwrap();
        let ds = GptDataset::open("train", data.clone(), spec.clone(), Some(cache.path())).unwrap();
        match ds.origin() {
            IndexOrigin::Rebuilt { reason: r } => {
                assert!(r.contains(reason), "{what}: {r:?} should say {reason:?}")
            }
            other => panic!("{what}: expected a rebuild, got {other:?}"),
        }
        // The rebuilt files are GPT-NeoX's again.
        assert_eq!(
            std::fs::read(cache.path().join(name(what))).unwrap(),
            fixture(&name(what))
        );
    }
}

#[test]
fn blending_indices_equal_gpt_neox_s() {
    let b = build_blending_indices(&[0.25, 0.6, 0.15], 1000).unwrap();
    assert_eq!(
        to_npy_bytes(&[1000], &b.dataset_index),
        fixture("blend_w0.25-0.6-0.15_n1000_dataset_index.npy")
    );
    assert_eq!(
        to_npy_bytes(&[1000], &b.dataset_sample_index),
        fixture("blend_w0.25-0.6-0.15_n1000_dataset_sample_index.npy")
    );
}

#[test]
fn split_source_opens_the_three_splits_under_gpt_neox_s_names() {
    let cache = tempfile::tempdir().unwrap();
    let config = DataConfig {
        source: DataSource::Split {
            prefix: reference().join(STEM),
            split: "949,50,1".into(),
        },
        seq_length: 512,
        seed: 4321,
        cache_dir: Some(cache.path().to_path_buf()),
    };
    let counts = SplitSamples {
        train: 2000,
        valid: 30,
        test: 10,
    };
    let splits = build_train_valid_test(&config, counts).unwrap();
    let train = splits.train.as_ref().expect("a train split");
    // The same dataset as the reference fixture: same samples.
    let first8 = NpyFile::read(&reference().join("index").join(format!(
        "{STEM}_train_indexmap_2000ns_512sl_4321s_first8_samples.npy"
    )))
    .unwrap()
    .to_vec::<i64>()
    .unwrap();
    assert_eq!(train.get(7).unwrap(), first8[7 * 513..8 * 513]);
    assert_eq!(train.len(), 2401);
    // 949,50,1 of 300 documents: valid is 285..300, test is empty.
    let valid = splits.valid.as_ref().expect("a valid split");
    assert_eq!(valid.datasets()[0].index().doc_idx.iter().min(), Some(&285));
    assert!(valid.len() as u64 >= counts.valid);
    assert!(splits.test.is_none(), "0 test documents: no test split");
    assert!(splits.rebuild_warnings().is_empty());
    // Damage the valid cache: opening again warns about it, and only it.
    let valid_shuffle = valid.datasets()[0].cache_paths().shuffle_idx.clone();
    std::fs::write(&valid_shuffle, b"not numpy").unwrap();
    let again = build_train_valid_test(&config, counts).unwrap();
    let warnings = again.rebuild_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("valid: ") && warnings[0].contains("magic"),
        "{warnings:?}"
    );
    for name in ["train", "valid"] {
        let file = cache.path().join(format!(
            "{STEM}_{name}_indexmap_{}ns_512sl_4321s_packedpi_ac_doc_idx.npy",
            if name == "train" { 2000 } else { 30 }
        ));
        assert!(file.is_file(), "{}", file.display());
    }
}

#[test]
fn weighted_source_blends_components_asked_for_half_a_percent_more() {
    let cache = tempfile::tempdir().unwrap();
    let neox = reference().join(STEM);
    let gpt2 = reference().join("small_gpt2_text_document");
    let config = DataConfig {
        source: DataSource::Weighted {
            train: vec![(neox.clone(), 3.0), (gpt2.clone(), 1.0)],
            valid: vec![(gpt2, 1.0)],
            test: vec![],
        },
        seq_length: 256,
        seed: 7,
        cache_dir: Some(cache.path().to_path_buf()),
    };
    let counts = SplitSamples::for_run(100, 50, 2, 8).unwrap();
    assert_eq!(
        counts,
        SplitSamples {
            train: 800,
            valid: 48,
            test: 16
        }
    );
    let splits = build_train_valid_test(&config, counts).unwrap();
    assert!(splits.test.is_none());
    let Some(Samples::Blended(train)) = &splits.train else {
        panic!("a blended train split")
    };
    // ceil(800 * 0.75 * 1.005) = 603 and ceil(800 * 0.25 * 1.005) = 201 asked,
    // under GPT-NeoX's names train_0 and train_1.
    for (k, asked) in [(0, 603), (1, 201)] {
        let ds = &train.datasets()[k];
        assert_eq!(ds.name(), format!("train_{k}"));
        assert!(
            ds.cache_paths()
                .doc_idx
                .to_string_lossy()
                .contains(&format!("_train_{k}_indexmap_{asked}ns_256sl_7s_"))
        );
        assert!(ds.index().total_samples() >= asked);
    }
    // The blend holds every part's len() and follows the greedy indices.
    let total: usize = train.datasets().iter().map(GptDataset::len).sum();
    assert_eq!(train.len(), total);
    let expected =
        build_blending_indices(&normalize_like_numpy(&[0.75, 0.25]).unwrap(), total).unwrap();
    assert_eq!(train.indices(), &expected);
    for i in [0, 1, 2, 3, 500, total - 1] {
        let part = usize::from(expected.dataset_index[i]);
        let sample = expected.dataset_sample_index[i] as usize;
        assert_eq!(
            train.get(i).unwrap(),
            train.datasets()[part].get(sample).unwrap(),
            "blended sample {i}"
        );
    }
    assert_eq!(
        train.get(total).unwrap(),
        train.get(0).unwrap(),
        "wraps like GPT-NeoX"
    );
    assert_eq!(splits.valid.unwrap().datasets()[0].name(), "valid_0");
}

#[test]
fn missing_data_is_an_error_naming_the_file() {
    let config = DataConfig {
        source: DataSource::Split {
            prefix: PathBuf::from("/nonexistent/corpus_text_document"),
            split: "1".into(),
        },
        seq_length: 8,
        seed: 1,
        cache_dir: None,
    };
    let err = build_train_valid_test(
        &config,
        SplitSamples {
            train: 1,
            valid: 1,
            test: 1,
        },
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("/nonexistent/corpus_text_document"),
        "{err}"
    );
}
