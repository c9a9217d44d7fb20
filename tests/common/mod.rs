//! Where the end-to-end tests find `../shared` (the offline corpus,
//! tokenizers and GPT-NeoX reference fixtures).

use std::path::PathBuf;

mod shared_dir;

/// The shared folder (see `shared_dir`); fails with a clear message when it
/// lacks the corpora.
pub fn shared() -> PathBuf {
    let dir = shared_dir::shared_dir();
    assert!(
        dir.join("fixtures/neox-reference").is_dir() && dir.join("data").is_dir(),
        "{} is incomplete: these tests need its data/ and fixtures/ (set NEOX_SHARED)",
        dir.display()
    );
    dir
}

/// A tokenizer file of the shared folder, as a command-line argument.
#[allow(dead_code)] // not every test binary uses it
pub fn tokenizer_file(name: &str) -> String {
    shared()
        .join("tokenizers")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// The shared e-mail corpus as char-level shards (UTF-8 bytes, EOD 0, as
/// GPT-NeoX's CharLevelTokenizer makes them), made once per test process;
/// returns the prefix.
#[allow(dead_code)] // the training tests use it
pub fn char_shards() -> &'static std::path::Path {
    use std::io::{BufRead, BufReader};
    use std::sync::OnceLock;
    static SHARDS: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, prefix) = SHARDS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("mail_text_document");
        let file = std::fs::File::open(shared().join("data/mail.jsonl.zst")).unwrap();
        let lines = BufReader::new(zstd::Decoder::new(file).unwrap()).lines();
        let mut writer =
            neox_indexed::IndexedWriter::create(&prefix, neox_indexed::DType::U16).unwrap();
        for line in lines {
            let doc: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            let text = doc["text"].as_str().unwrap_or_default();
            if !text.is_empty() {
                let mut ids: Vec<u32> = text.bytes().map(u32::from).collect();
                ids.push(0);
                writer.add_document(&ids).unwrap();
            }
        }
        writer.finish().unwrap();
        (dir, prefix)
    });
    prefix
}

/// `configs/cpu-tiny.yml` of this repository.
#[allow(dead_code)] // the training tests use it
pub fn cpu_tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/cpu-tiny.yml")
}

/// The data options of [`char_shards`]: its path, GPT-NeoX's split
/// 949,50,1, the tokenizer and the vocabulary padded to 512; one a line.
#[allow(dead_code)] // the training tests use it
pub fn char_data() -> String {
    format!(
        "data_path: {}\nsplit: \"949,50,1\"\ntokenizer_type: CharLevelTokenizer\n\
         padded_vocab_size: 512\n",
        char_shards().display()
    )
}

/// The config files of a run in `dir`: cpu-tiny, then `dir/data.yml` with
/// [`char_data`] and `data`, then `dir/own.yml` with `own` (a later file wins).
#[allow(dead_code)] // the training tests use it
pub fn cpu_tiny_configs(dir: &std::path::Path, data: &str, own: &str) -> Vec<PathBuf> {
    let data_yml = dir.join("data.yml");
    std::fs::write(&data_yml, format!("{}{data}", char_data())).unwrap();
    let own_yml = dir.join("own.yml");
    std::fs::write(&own_yml, own).unwrap();
    vec![cpu_tiny(), data_yml, own_yml]
}

/// The records of the run in `dir` (its `run/metrics.jsonl`), as JSON.
#[allow(dead_code)] // the training tests use it
pub fn run_metrics(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("run/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
