//! Every config shipped in `configs/` parses, alone or as GPT-NeoX combines
//! them (a model file, then a data file), with GPT-NeoX's values.

use std::path::{Path, PathBuf};

use neox_trainer::NeoxArgs;
use neox_trainer::config::DataSource;
use neox_trainer::model::{InitMethod, PosEmb};
use neox_trainer::precision::Precision;

fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

fn yml_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(configs())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_model_config_parses_with_the_data_setup() {
    let data = configs().join("enron.yml");
    let models: Vec<PathBuf> = yml_files().into_iter().filter(|p| *p != data).collect();
    assert!(models.len() >= 6, "{models:?}");
    for model in models {
        let args = NeoxArgs::from_files(&[model.clone(), data.clone()])
            .unwrap_or_else(|e| panic!("{}: {e}", model.display()));
        assert!(args.model.num_layers > 0, "{}", model.display());
        assert!(
            matches!(args.data, Some(DataSource::Split { .. })),
            "{}",
            model.display()
        );
        assert!(args.training.train_iters > 0);
    }
}

#[test]
fn gpt_neox_sizes_have_gpt_neox_values() {
    let read = |name: &str| NeoxArgs::from_files(&[configs().join(name)]).unwrap();
    let expected = [
        ("125M.yml", 12, 768, 12, 6e-4),
        ("350M.yml", 24, 1024, 16, 3e-4),
        ("760M.yml", 24, 1536, 16, 2.5e-4),
        ("1-3B.yml", 24, 2048, 16, 2e-4),
        ("2-7B.yml", 32, 2560, 32, 1.6e-4),
    ];
    for (name, layers, hidden, heads, lr) in expected {
        let args = read(name);
        assert_eq!(args.model.num_layers, layers, "{name}");
        assert_eq!(args.model.hidden_size, hidden, "{name}");
        assert_eq!(args.model.num_attention_heads, heads, "{name}");
        assert_eq!(args.model.seq_length, 2048, "{name}");
        assert_eq!(args.model.pos_emb, PosEmb::Rotary, "{name}");
        assert_eq!(args.model.init_method, InitMethod::SmallInit, "{name}");
        assert_eq!(
            args.model.output_layer_init_method,
            InitMethod::WangInit,
            "{name}"
        );
        assert!(!args.model.tied_embeddings, "{name}");
        assert_eq!(args.optim.lr, lr, "{name}");
        assert_eq!(args.optim.weight_decay, 0.1, "{name}");
        assert_eq!(args.training.train_iters, 320000, "{name}");
        // DeepSpeed / fusion options are reported, not silently dropped;
        // every option of the size configs is implemented (fp16 included).
        let reported: Vec<&str> = args.not_acted_on.iter().map(|(k, _)| k.as_str()).collect();
        for key in ["rope_fusion", "partition_activations"] {
            assert!(
                reported.contains(&key),
                "{name}: {key} not reported in {reported:?}"
            );
        }
        let stopping: Vec<&str> = args.unimplemented.iter().map(|u| u.key.as_str()).collect();
        assert!(stopping.is_empty(), "{name}: {stopping:?}");
        assert_eq!(args.precision.precision, Precision::Fp16, "{name}");
        assert_eq!(args.training.checkpoint_layers, Some(1), "{name}");
    }
}

#[test]
fn cpu_tiny_is_small() {
    let args = NeoxArgs::from_files(&[configs().join("cpu-tiny.yml")]).unwrap();
    assert!(args.model.hidden_size <= 256 && args.model.num_layers <= 4);
    assert!(args.not_acted_on.is_empty(), "{:?}", args.not_acted_on);
    assert!(args.unimplemented.is_empty(), "{:?}", args.unimplemented);
}

#[test]
fn a_later_file_wins_and_the_override_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let later = dir.path().join("later.yml");
    std::fs::write(&later, "train_iters: 7\nhidden_dropout: 0.2\n").unwrap();
    let tiny = configs().join("cpu-tiny.yml");
    let options =
        neox_trainer::config::yaml::Options::read(&[tiny.clone(), later.clone()]).unwrap();
    let keys: Vec<(&str, &Path, &Path)> = options
        .overrides()
        .iter()
        .map(|o| (o.key.as_str(), o.old_file.as_path(), o.new_file.as_path()))
        .collect();
    assert_eq!(
        keys,
        [
            ("train_iters", tiny.as_path(), later.as_path()),
            ("hidden_dropout", tiny.as_path(), later.as_path()),
        ]
    );
    let args = NeoxArgs::from_options(options).unwrap();
    assert_eq!(args.training.train_iters, 7);
    assert_eq!(args.model.hidden_dropout, 0.2);
}

#[test]
fn a_bad_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("override.yml");
    std::fs::write(&bad, "num_layers: two\n").unwrap();
    let err = NeoxArgs::from_files(&[configs().join("125M.yml"), bad.clone()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("override.yml") && err.contains("num_layers"),
        "{err}"
    );
    let missing = dir.path().join("missing.yml");
    let err = NeoxArgs::from_files(&[missing]).unwrap_err().to_string();
    assert!(err.contains("missing.yml"), "{err}");
    std::fs::write(&bad, "{num_layers: 2,, }\n").unwrap();
    let err = NeoxArgs::from_files(&[bad]).unwrap_err().to_string();
    assert!(
        err.contains("override.yml") && err.contains("line"),
        "{err}"
    );
}
