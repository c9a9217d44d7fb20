//! The fast BPE engine gives the ids of the `tokenizers` library on every
//! document of the shared corpus (`mail.jsonl.zst`) and of the GPT-NeoX
//! reference fixture (`small.jsonl`), for GPT-2 and GPT-NeoX-20B.

mod bpe_common;

use std::io::{BufRead, BufReader, Read};

use bpe_common::{gpt2, neox20b, reference, shared};
use neox_tokenize::bpe::FastBpe;
use tokenizers::Tokenizer;

/// The `text` of each JSON line.
fn documents(reader: impl Read, name: &str) -> Vec<String> {
    BufReader::new(reader)
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let line = line.unwrap_or_else(|e| panic!("{name} line {}: {e}", i + 1));
            let value: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("{name} line {}: {e}", i + 1));
            value["text"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} line {}: no string `text`", i + 1))
                .to_owned()
        })
        .collect()
}

fn mail() -> Vec<String> {
    let path = shared().join("data/mail.jsonl.zst");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let decoder = zstd::stream::read::Decoder::new(file).expect("zstd stream");
    documents(decoder, "mail.jsonl.zst")
}

fn small() -> Vec<String> {
    let path = shared().join("fixtures/neox-reference/small.jsonl");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    documents(file, "small.jsonl")
}

/// Compares every document on two threads; returns the number of tokens.
fn compare(name: &str, (hf, fast): &(Tokenizer, FastBpe), docs: &[String]) -> usize {
    let half = docs.len() / 2;
    let check = |offset: usize, docs: &[String]| {
        let mut tokens = 0;
        let mut ids = Vec::new();
        for (i, doc) in docs.iter().enumerate() {
            let expected = reference(hf, doc);
            ids.clear();
            fast.encode_into(doc, &mut ids);
            assert!(
                ids == expected,
                "{name}: document {} differs (first difference at token {})",
                offset + i + 1,
                ids.iter()
                    .zip(&expected)
                    .take_while(|(a, b)| a == b)
                    .count()
            );
            tokens += ids.len();
        }
        tokens
    };
    std::thread::scope(|s| {
        let first = s.spawn(|| check(0, &docs[..half]));
        let second = check(half, &docs[half..]);
        first.join().expect("worker") + second
    })
}

#[test]
fn gpt2_and_neox20b_match_tokenizers_on_the_fixture_and_the_whole_corpus() {
    let gpt2 = gpt2();
    let neox = neox20b();
    let small = small();
    assert_eq!(small.len(), 300);
    assert!(compare("GPT-2 small.jsonl", &gpt2, &small) > 0);
    assert!(compare("NeoX-20B small.jsonl", &neox, &small) > 0);
    let mail = mail();
    assert_eq!(mail.len(), 6046);
    let gpt2_tokens = compare("GPT-2 mail.jsonl.zst", &gpt2, &mail);
    let neox_tokens = compare("NeoX-20B mail.jsonl.zst", &neox, &mail);
    // GPT-NeoX's own runs (fixtures README) counted these, one EOD per document included.
    assert_eq!(gpt2_tokens + mail.len(), 13_566_911);
    assert_eq!(neox_tokens + mail.len(), 12_376_239);
}
