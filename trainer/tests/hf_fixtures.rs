//! The forward pass reproduces Hugging Face transformers' GPT-NeoX on the
//! shared fixtures (`../shared/fixtures/hf-gptneox-tiny/`), and a model written
//! as a Hugging Face checkpoint reads back identical.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use neox_trainer::hf;
use neox_trainer::model::cross_entropy;

type B = Flex;

#[path = "../../tests/common/shared_dir.rs"]
mod shared_dir;

fn fixtures() -> PathBuf {
    let dir = shared_dir::shared_dir().join("fixtures/hf-gptneox-tiny");
    assert!(
        dir.is_dir(),
        "shared fixtures missing: {} (set NEOX_SHARED)",
        dir.display()
    );
    dir
}

/// A little-endian, C-order `.npy` file (version 1): its shape and raw data.
fn read_npy(path: &Path) -> (Vec<usize>, String, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    let descr = header
        .split("'descr': '")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap()
        .to_string();
    assert!(header.contains("'fortran_order': False"));
    let shape = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape = shape
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    (shape, descr, bytes[10 + header_len..].to_vec())
}

fn input_ids(dir: &Path) -> (Vec<i64>, [usize; 2]) {
    let (shape, descr, data) = read_npy(&dir.join("input_ids.npy"));
    assert_eq!(descr, "<i8");
    let ids = data
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (ids, [shape[0], shape[1]])
}

fn reference_logits(dir: &Path) -> Vec<f32> {
    let (_, descr, data) = read_npy(&dir.join("logits.npy"));
    assert_eq!(descr, "<f4");
    data.chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn reference_loss(dir: &Path) -> f64 {
    let text = std::fs::read_to_string(dir.join("loss.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["loss"].as_f64().unwrap()
}

fn check(name: &str) {
    let dir = fixtures().join(name);
    let device = Default::default();
    let model = hf::load::<B>(&dir, &device).unwrap();
    let (ids, [b, t]) = input_ids(&dir);
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, t]), &device);
    let logits = model.forward(tokens.clone());
    let ours = logits.clone().into_data().to_vec::<f32>().unwrap();
    let theirs = reference_logits(&dir);
    assert_eq!(ours.len(), theirs.len());
    let max_diff = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_diff < 1e-4, "{name}: logits differ by up to {max_diff}");

    // transformers' loss: position i predicts token i + 1.
    let v = logits.dims()[2];
    let shifted = logits.narrow(1, 0, t - 1).reshape([b, t - 1, v]);
    let targets = tokens.narrow(1, 1, t - 1);
    let loss = cross_entropy(shifted, targets).into_scalar() as f64;
    let expected = reference_loss(&dir);
    assert!(
        (loss - expected).abs() < 1e-5,
        "{name}: loss {loss} vs {expected}"
    );
}

#[test]
fn parallel_residual_partial_rotary_matches_transformers() {
    check("parallel-rotary25");
}

#[test]
fn sequential_residual_full_rotary_matches_transformers() {
    check("sequential-rotary100");
}

#[test]
fn saved_checkpoint_reads_back_identical() {
    let dir = fixtures().join("sequential-rotary100");
    let device = Default::default();
    let model = hf::load::<B>(&dir, &device).unwrap();
    let out = tempfile::tempdir().unwrap();
    hf::save(&model, out.path()).unwrap();
    let again = hf::load::<B>(out.path(), &device).unwrap();
    assert_eq!(again.config, model.config);
    let (ids, shape) = input_ids(&dir);
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, shape), &device);
    let a = model
        .forward(tokens.clone())
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let b = again.forward(tokens).into_data().to_vec::<f32>().unwrap();
    assert_eq!(a, b);
    // The saved config is one transformers reads: the names it expects are there.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["model_type"], "gpt_neox");
    assert_eq!(config["use_parallel_residual"], false);
}

#[test]
fn broken_checkpoints_are_refused_with_their_file_named() {
    let out = tempfile::tempdir().unwrap();
    let device = Default::default();
    // No config.json.
    let err = hf::load::<B>(out.path(), &device).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");
    // A config, but weights of the wrong shape.
    let src = fixtures().join("parallel-rotary25");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["intermediate_size"] = 128.into();
    std::fs::write(out.path().join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        src.join("model.safetensors"),
        out.path().join("model.safetensors"),
    )
    .unwrap();
    let err = hf::load::<B>(out.path(), &device).unwrap_err().to_string();
    assert!(
        err.contains("dense_h_to_4h") && err.contains("shape"),
        "{err}"
    );
    // Truncated weights.
    std::fs::write(out.path().join("model.safetensors"), b"\x10\x00\x00").unwrap();
    let err = hf::load::<B>(out.path(), &device).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}

fn logits_of(model: &neox_trainer::GptNeox<B>, dir: &Path) -> Vec<f32> {
    let (ids, shape) = input_ids(dir);
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, shape), &Default::default());
    model.forward(tokens).into_data().to_vec::<f32>().unwrap()
}

#[test]
fn sharded_and_half_precision_checkpoints_read_back() {
    let dir = fixtures().join("parallel-rotary25");
    let device = Default::default();
    let model = hf::load::<B>(&dir, &device).unwrap();
    let expected = logits_of(&model, &dir);
    let out = tempfile::tempdir().unwrap();
    // An earlier single-file export in the same folder is replaced.
    hf::save(&model, out.path()).unwrap();
    let options = hf::SaveOptions {
        max_shard_bytes: 200_000,
        eos_token_id: Some(0),
        bos_token_id: Some(0),
        ..Default::default()
    };
    let written = hf::save_with(&model, out.path(), &options).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // embed_in and embed_out are 256 kB each: each takes a shard of its own.
    let shards = names.iter().filter(|n| n.starts_with("model-")).count();
    assert!(shards >= 3, "{names:?}");
    assert!(names.contains(&format!("model-00001-of-{shards:05}.safetensors")));
    assert!(
        !names.contains(&"model.safetensors".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"model.safetensors.index.json".to_string()));
    assert_eq!(written.len(), shards + 2);
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(index["weight_map"].as_object().unwrap().len(), 28);
    let again = hf::load::<B>(out.path(), &device).unwrap();
    assert_eq!(logits_of(&again, &dir), expected);
    let info = hf::read_info(out.path()).unwrap();
    assert_eq!((info.bos_token_id, info.eos_token_id), (Some(0), Some(0)));

    // bf16 and f16: half the bytes, the logits near f32's.
    for (dtype, tolerance) in [(hf::HfDtype::Bf16, 0.05), (hf::HfDtype::F16, 0.005)] {
        let half = tempfile::tempdir().unwrap();
        let options = hf::SaveOptions {
            dtype,
            ..Default::default()
        };
        hf::save_with(&model, half.path(), &options).unwrap();
        let size = |d: &Path| {
            std::fs::metadata(d.join("model.safetensors"))
                .unwrap()
                .len()
        };
        let f32_size = {
            let single = tempfile::tempdir().unwrap();
            hf::save(&model, single.path()).unwrap();
            size(single.path())
        };
        assert!(size(half.path()) < f32_size / 2 + 4096);
        let config = std::fs::read_to_string(half.path().join("config.json")).unwrap();
        assert!(config.contains(dtype.torch_name()), "{config}");
        let low = hf::load::<B>(half.path(), &device).unwrap();
        let diff = logits_of(&low, &dir)
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff > 0.0 && diff < tolerance, "{dtype:?}: {diff}");
    }
}
