//! Shared by the `bpe_*` tests: the shared folder, and each tokenizer both as
//! the `tokenizers` library loads it and as the fast engine loads it.

#![allow(dead_code)]

use std::path::PathBuf;

use neox_tokenize::bpe::FastBpe;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

#[path = "../../../tests/common/shared_dir.rs"]
mod shared_dir;

/// The shared folder (see `shared_dir`), with a clear message when it lacks tokenizers.
pub fn shared() -> PathBuf {
    let dir = shared_dir::shared_dir();
    assert!(
        dir.join("tokenizers").is_dir(),
        "the shared folder {} is missing: set NEOX_SHARED to it",
        dir.display()
    );
    dir
}

pub fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// GPT-2 from `vocab.json` + `merges.txt`, `<|endoftext|>` special (GPT-NeoX's GPT2BPETokenizer).
pub fn gpt2() -> (Tokenizer, FastBpe) {
    let dir = shared().join("tokenizers");
    let vocab = dir.join("gpt2-vocab.json");
    let merges = dir.join("gpt2-merges.txt");
    let model = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .build()
        .expect("GPT-2 BPE");
    let mut hf = Tokenizer::new(model);
    hf.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    hf.add_special_tokens(&[AddedToken::from("<|endoftext|>", true)]);
    let fast = FastBpe::from_vocab_merges(&read(vocab), &read(merges), &["<|endoftext|>"])
        .expect("fast GPT-2");
    (hf, fast)
}

/// The GPT-NeoX-20B `tokenizer.json`, as text.
pub fn neox20b_json() -> String {
    read(shared().join("tokenizers/neox-20b.tokenizer.json"))
}

/// A tokenizer from `tokenizer.json` text, both ways.
pub fn from_json(json: &str) -> (Tokenizer, FastBpe) {
    let hf = Tokenizer::from_bytes(json.as_bytes()).expect("tokenizers loads it");
    let fast = FastBpe::from_tokenizer_json(json).expect("the fast engine supports it");
    (hf, fast)
}

/// GPT-NeoX-20B, both ways.
pub fn neox20b() -> (Tokenizer, FastBpe) {
    from_json(&neox20b_json())
}

/// The library's ids (with special tokens, as GPT-NeoX calls it).
pub fn reference(hf: &Tokenizer, text: &str) -> Vec<u32> {
    hf.encode_fast(text, true)
        .expect("tokenizers encodes it")
        .get_ids()
        .to_vec()
}
