//! Differential test: on thousands of random texts built to hit every rule of
//! the pipeline (contractions, space runs before words, Unicode spaces,
//! combining marks to compose, emoji, CJK, digits of many scripts, random code
//! points, repaired invalid UTF-8, the added tokens themselves), the fast BPE
//! engine gives exactly the ids of the `tokenizers` library. Deterministic:
//! a fixed seed per tokenizer.

mod bpe_common;

use bpe_common::{from_json, gpt2, neox20b, neox20b_json, reference};
use neox_tokenize::bpe::FastBpe;
use tokenizers::Tokenizer;

/// SplitMix64: a small, seeded, reproducible generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn char_in(&mut self, first: u32, last: u32) -> char {
        let cp = first + (self.next() % u64::from(last - first + 1)) as u32;
        char::from_u32(cp).unwrap_or('\u{FFFD}')
    }
}

const WORDS: &[&str] = &[
    "the",
    "Hello",
    "world",
    "don",
    "I",
    "we",
    "naïve",
    "café",
    "Zürich",
    "straße",
    "ΑΒΓ",
    "Москва",
    "日本語",
    "中文",
    "한국어",
    "עברית",
    "العربية",
    "हिन्दी",
    "ไทย",
    "http",
    "www",
    "x",
];
const PUNCT: &[&str] = &[
    ".", ",", "!", "?", "...", "--", "==", "=====", "'", "\"", "(", ")", "<", ">", "|", "<|", "|>",
    "@", "#", "$", "%", "^", "&", "*", "_", "/", "\\", "~", "`", "€", "©", "→", "•", "¿", "。",
    "、", "!",
];
const CONTRACTIONS: &[&str] = &[
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "''s", "' s",
];
const SPACES: &[&str] = &[
    " ", "\t", "\n", "\r\n", "\u{a0}", "\u{3000}", "\u{2028}", "\u{2029}", "\u{85}", "\u{1680}",
    "\u{2009}", "\u{202f}", "\u{205f}", "\u{b}", "\u{c}", "\u{200b}", "\u{feff}",
];
const COMPOSABLE: &[&str] = &[
    "e\u{301}",
    "a\u{30a}",
    "\u{212b}",
    "\u{2126}",
    "o\u{308}\u{301}",
    "\u{1100}\u{1161}\u{11a8}",
    "\u{f900}",
    "\u{345}\u{301}a",
    "\u{1e0b}\u{323}",
    "\u{0958}",
    "\u{fb2a}",
    "\u{2000}",
    "\u{1f71}",
    "\u{301}\u{301}",
];
const EMOJI: &[&str] = &[
    "🎉",
    "😀",
    "👍🏽",
    "👨\u{200d}👩\u{200d}👧",
    "🇫🇷",
    "❤\u{fe0f}",
    "🙂🙂🙂",
    "\u{1f9d1}\u{200d}\u{1f4bb}",
];
const DIGITS: &[&str] = &[
    "0", "42", "3.14", "1,000", "٣٤", "௩", "Ⅻ", "½", "²", "𝟙", "١٢٣", "007",
];

/// One random piece of text; `added` are the tokenizer's added tokens.
fn atom(rng: &mut Rng, added: &[&str]) -> String {
    match rng.below(20) {
        0..=3 => rng.pick(WORDS).to_owned(),
        4 => rng.pick(PUNCT).to_owned(),
        5 => rng.pick(CONTRACTIONS).to_owned(),
        6 | 7 => " ".repeat(1 + rng.below(30)),
        8 => (0..1 + rng.below(6)).map(|_| rng.pick(SPACES)).collect(),
        9 => rng.pick(COMPOSABLE).to_owned(),
        10 => rng.pick(EMOJI).to_owned(),
        11 => rng.pick(DIGITS).to_owned(),
        12 => (0..1 + rng.below(4))
            .map(|_| rng.char_in(0x4E00, 0x9FFF))
            .collect(),
        13 => (0..1 + rng.below(3))
            .map(|_| rng.char_in(0x300, 0x36F))
            .collect(),
        14 => (0..1 + rng.below(4))
            .map(|_| rng.char_in(0x80, 0x10FFFF))
            .collect(),
        15 => (0..1 + rng.below(4))
            .map(|_| rng.char_in(0, 0x7F))
            .collect(),
        16 => {
            // Invalid UTF-8 made valid: random bytes, repaired.
            let bytes: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        17 if !added.is_empty() => rng.pick(added).to_owned(),
        17 | 18 => {
            let token = if added.is_empty() {
                "<|endoftext|>"
            } else {
                rng.pick(added)
            };
            token[..token
                .char_indices()
                .nth(token.chars().count() / 2)
                .map_or(0, |(i, _)| i)]
                .to_owned()
        }
        19 if rng.below(4) == 0 => {
            // A long run (the engine's priority-queue path beyond 64 bytes).
            let unit = rng.pick(&["=", "-", "ab", "\t", " ", "9", "é", "日本", "xyz ", "\n\n"]);
            unit.repeat(20 + rng.below(120))
        }
        _ => format!(" {}", rng.pick(WORDS)),
    }
}

fn random_text(rng: &mut Rng, added: &[&str]) -> String {
    let atoms = rng.below(40);
    (0..atoms).map(|_| atom(rng, added)).collect()
}

fn escaped(text: &str) -> String {
    text.chars().flat_map(char::escape_debug).collect()
}

fn differential(
    name: &str,
    (hf, fast): &(Tokenizer, FastBpe),
    added: &[&str],
    seed: u64,
    cases: usize,
) {
    let mut rng = Rng(seed);
    for case in 0..cases {
        let text = random_text(&mut rng, added);
        let expected = reference(hf, &text);
        let ids = fast.encode(&text);
        assert!(
            ids == expected,
            "{name}, case {case}: \"{}\"\n fast: {ids:?}\n tokenizers: {expected:?}",
            escaped(&text)
        );
    }
}

const CASES: usize = 4000;

#[test]
fn gpt2_random_unicode() {
    differential("GPT-2", &gpt2(), &["<|endoftext|>"], 1, CASES);
}

#[test]
fn neox20b_random_unicode_with_its_added_tokens() {
    let spaces: Vec<String> = (2..=24).map(|n| " ".repeat(n)).collect();
    let mut added = vec!["<|endoftext|>", "<|padding|>"];
    added.extend(spaces.iter().map(String::as_str));
    differential("NeoX-20B", &neox20b(), &added, 2, CASES);
}

/// Variants of NeoX-20B's `tokenizer.json` that exercise the other supported
/// settings: prefix space, `ignore_merges`, and added tokens whose contents
/// change under NFC or that are matched before normalization.
#[test]
fn supported_variants_random_unicode() {
    let base: serde_json::Value = serde_json::from_str(&neox20b_json()).expect("JSON");

    let mut prefix = base.clone();
    prefix["pre_tokenizer"]["add_prefix_space"] = true.into();
    differential(
        "NeoX-20B add_prefix_space",
        &from_json(&prefix.to_string()),
        &["<|endoftext|>"],
        3,
        CASES / 4,
    );

    let mut ignore = base.clone();
    ignore["model"]["ignore_merges"] = true.into();
    differential(
        "NeoX-20B ignore_merges",
        &from_json(&ignore.to_string()),
        &[],
        4,
        CASES / 4,
    );

    let mut added = base.clone();
    let tokens = added["added_tokens"].as_array_mut().expect("added_tokens");
    for (content, normalized) in [
        ("Å!", true),
        ("e\u{301}x", true),
        ("e\u{301}y", false),
        ("<mask>", false),
    ] {
        tokens.push(serde_json::json!({
            "id": 0, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": normalized, "special": !normalized,
        }));
    }
    differential(
        "NeoX-20B extra added tokens",
        &from_json(&added.to_string()),
        &[
            "\u{212b}!",
            "Å!",
            "e\u{301}x",
            "éx",
            "e\u{301}y",
            "éy",
            "<mask>",
            "<|padding|>",
        ],
        5,
        CASES / 4,
    );

    let mut no_normalizer = base;
    no_normalizer["normalizer"] = serde_json::Value::Null;
    differential(
        "NeoX-20B without NFC",
        &from_json(&no_normalizer.to_string()),
        &["  "],
        6,
        CASES / 4,
    );
}

#[test]
fn loading_through_a_tokenizers_object_gives_the_same_engine() {
    let (hf, fast) = neox20b();
    let via_hf = FastBpe::from_hf_tokenizer(&hf).expect("supported");
    let (hf2, _) = gpt2();
    let gpt2_via_hf = FastBpe::from_hf_tokenizer(&hf2).expect("supported");
    let mut rng = Rng(7);
    for _ in 0..500 {
        let text = random_text(&mut rng, &["<|endoftext|>", "   "]);
        assert_eq!(
            via_hf.encode(&text),
            fast.encode(&text),
            "\"{}\"",
            escaped(&text)
        );
        assert_eq!(
            gpt2_via_hf.encode(&text),
            reference(&hf2, &text),
            "\"{}\"",
            escaped(&text)
        );
    }
}
