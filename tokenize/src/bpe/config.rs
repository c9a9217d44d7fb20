//! What a byte-level BPE tokenizer is made of, read from `tokenizer.json` or
//! from GPT-2's `vocab.json` + `merges.txt`, and the support check: every
//! setting the fast engine does not reproduce exactly is refused with a reason,
//! so that the caller can fall back to the `tokenizers` library.

use serde_json::Value;

use super::FastBpeError;

/// An added token as the engine needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AddedToken {
    pub content: String,
    pub id: u32,
    /// Matched in the normalized text (`true`) or in the raw text.
    pub normalized: bool,
}

/// A supported byte-level BPE tokenizer, still in strings.
#[derive(Debug)]
pub(crate) struct Spec {
    /// The model's vocabulary, in byte-level alphabet.
    pub vocab: Vec<(String, u32)>,
    /// Merges in rank order.
    pub merges: Vec<(String, String)>,
    pub added: Vec<AddedToken>,
    pub nfc: bool,
    pub add_prefix_space: bool,
    pub ignore_merges: bool,
}

fn unsupported(reason: impl Into<String>) -> FastBpeError {
    FastBpeError::Unsupported(reason.into())
}

fn invalid(what: impl Into<String>) -> FastBpeError {
    FastBpeError::Invalid(what.into())
}

/// The type name of a pipeline step (`{"type": "NFC"}`), or `None` for null.
fn step_type<'v>(value: Option<&'v Value>, step: &str) -> Result<Option<&'v str>, FastBpeError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .get("type")
            .and_then(Value::as_str)
            .map(Some)
            .ok_or_else(|| invalid(format!("`{step}` has no string field `type`"))),
    }
}

fn flag(value: &Value, key: &str, default: bool) -> Result<bool, FastBpeError> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(invalid(format!(
            "`{key}` should be true or false, found {other}"
        ))),
    }
}

/// Whether the normalizer is NFC (`true`) or absent (`false`).
fn read_normalizer(value: Option<&Value>) -> Result<bool, FastBpeError> {
    match step_type(value, "normalizer")? {
        None => Ok(false),
        Some("NFC") => Ok(true),
        Some("Sequence") => {
            let steps = value
                .and_then(|v| v.get("normalizers"))
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("normalizer `Sequence` has no list `normalizers`"))?;
            let mut nfc = false;
            for step in steps {
                match step_type(Some(step), "normalizer")? {
                    Some("NFC") if !nfc => nfc = true,
                    Some(other) => {
                        return Err(unsupported(format!(
                            "normalizer sequence step `{other}` (only one NFC is supported)"
                        )));
                    }
                    None => {}
                }
            }
            Ok(nfc)
        }
        Some(other) => Err(unsupported(format!(
            "normalizer `{other}` (only none or NFC are supported)"
        ))),
    }
}

/// `add_prefix_space` of a ByteLevel pre-tokenizer that splits with the GPT-2 regex.
fn read_pre_tokenizer(value: Option<&Value>) -> Result<bool, FastBpeError> {
    let byte_level = match step_type(value, "pre_tokenizer")? {
        Some("ByteLevel") => value,
        Some("Sequence") => {
            let steps = value
                .and_then(|v| v.get("pretokenizers"))
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("pre_tokenizer `Sequence` has no list `pretokenizers`"))?;
            match steps.as_slice() {
                [one] if step_type(Some(one), "pre_tokenizer")? == Some("ByteLevel") => Some(one),
                _ => {
                    return Err(unsupported(
                        "a pre-tokenizer sequence other than a single ByteLevel",
                    ));
                }
            }
        }
        Some(other) => {
            return Err(unsupported(format!(
                "pre-tokenizer `{other}` (only ByteLevel is supported)"
            )));
        }
        None => {
            return Err(unsupported(
                "no pre-tokenizer (only ByteLevel is supported)",
            ));
        }
    };
    let Some(byte_level) = byte_level else {
        return Err(unsupported("no pre-tokenizer"));
    };
    if !flag(byte_level, "use_regex", true)? {
        return Err(unsupported("ByteLevel pre-tokenizer with use_regex false"));
    }
    flag(byte_level, "add_prefix_space", true)
}

fn read_vocab(value: Option<&Value>, what: &str) -> Result<Vec<(String, u32)>, FastBpeError> {
    let object = value
        .and_then(Value::as_object)
        .ok_or_else(|| invalid(format!("{what} should be an object of token -> id")))?;
    object
        .iter()
        .map(|(token, id)| {
            id.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .map(|id| (token.clone(), id))
                .ok_or_else(|| {
                    invalid(format!(
                        "{what}: token {token:?} has id {id}, expected a u32"
                    ))
                })
        })
        .collect()
}

/// One merge line `left right`, as `tokenizers` splits it.
fn split_merge(line: &str, number: usize) -> Result<(String, String), FastBpeError> {
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(left), Some(right), None) => Ok((left.to_owned(), right.to_owned())),
        _ => Err(invalid(format!(
            "merge {number} is {line:?}, expected two tokens separated by one space"
        ))),
    }
}

fn read_merges(value: Option<&Value>) -> Result<Vec<(String, String)>, FastBpeError> {
    let list = value
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("model.merges should be a list"))?;
    list.iter()
        .enumerate()
        .map(|(i, merge)| match merge {
            Value::String(line) => split_merge(line, i + 1),
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(l), Value::String(r)] => Ok((l.clone(), r.clone())),
                _ => Err(invalid(format!("merge {} should be two strings", i + 1))),
            },
            other => Err(invalid(format!(
                "merge {} is {other}, expected \"left right\" or [left, right]",
                i + 1
            ))),
        })
        .collect()
}

/// A BPE model: vocabulary, merges, `ignore_merges`.
type Model = (Vec<(String, u32)>, Vec<(String, String)>, bool);

/// Reads the model of `tokenizer.json` and refuses what the engine cannot do.
fn read_model(model: &Value) -> Result<Model, FastBpeError> {
    match model.get("type").and_then(Value::as_str) {
        Some("BPE") | None => {}
        Some(other) => {
            return Err(unsupported(format!(
                "model `{other}` (only BPE is supported)"
            )));
        }
    }
    match model.get("dropout") {
        None | Some(Value::Null) => {}
        Some(d) if d.as_f64() == Some(0.0) => {}
        Some(d) => return Err(unsupported(format!("BPE dropout {d} (random merges)"))),
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        match model.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(v) => return Err(unsupported(format!("BPE {key} {v}"))),
        }
    }
    let vocab = read_vocab(model.get("vocab"), "model.vocab")?;
    let merges = read_merges(model.get("merges"))?;
    let ignore_merges = flag(model, "ignore_merges", false)?;
    Ok((vocab, merges, ignore_merges))
}

/// The added tokens with the ids `tokenizers` gives them: the model's id when
/// the content is in the model's vocabulary, else the next id from the model's
/// vocabulary size on, in file order.
fn read_added_tokens(
    value: Option<&Value>,
    vocab: &[(String, u32)],
    nfc: bool,
) -> Result<Vec<AddedToken>, FastBpeError> {
    let list = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(v) => v
            .as_array()
            .ok_or_else(|| invalid("added_tokens should be a list"))?,
    };
    let model_ids: std::collections::HashMap<&str, u32> =
        vocab.iter().map(|(t, id)| (t.as_str(), *id)).collect();
    let mut next_id = u32::try_from(vocab.len()).map_err(|_| invalid("vocabulary too large"))?;
    let mut added: Vec<AddedToken> = Vec::new();
    for (i, token) in list.iter().enumerate() {
        let content = token
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("added token {} has no string `content`", i + 1)))?;
        for key in ["single_word", "lstrip", "rstrip"] {
            if flag(token, key, false)? {
                return Err(unsupported(format!(
                    "added token {content:?} with {key} true"
                )));
            }
        }
        if content.is_empty() {
            continue;
        }
        if added.iter().any(|a| a.content == content) {
            return Err(unsupported(format!("added token {content:?} listed twice")));
        }
        let special = flag(token, "special", false)?;
        let normalized = flag(token, "normalized", !special)?;
        let id = match model_ids.get(content) {
            Some(&id) => id,
            None => {
                next_id += 1;
                next_id - 1
            }
        };
        let content = if normalized && nfc {
            super::normalize::nfc(content).into_owned()
        } else {
            content.to_owned()
        };
        added.push(AddedToken {
            content,
            id,
            normalized,
        });
    }
    Ok(added)
}

/// Reads a `tokenizer.json` and checks that the fast engine supports it.
pub(crate) fn from_tokenizer_json(json: &Value) -> Result<Spec, FastBpeError> {
    for key in ["truncation", "padding"] {
        if !matches!(json.get(key), None | Some(Value::Null)) {
            return Err(unsupported(format!("{key} is set")));
        }
    }
    let nfc = read_normalizer(json.get("normalizer"))?;
    let add_prefix_space = read_pre_tokenizer(json.get("pre_tokenizer"))?;
    match step_type(json.get("post_processor"), "post_processor")? {
        None | Some("ByteLevel") => {}
        Some(other) => {
            return Err(unsupported(format!(
                "post-processor `{other}` (it may add tokens; only ByteLevel is supported)"
            )));
        }
    }
    let model = json
        .get("model")
        .ok_or_else(|| invalid("tokenizer.json has no `model`"))?;
    let (vocab, merges, ignore_merges) = read_model(model)?;
    let added = read_added_tokens(json.get("added_tokens"), &vocab, nfc)?;
    Ok(Spec {
        vocab,
        merges,
        added,
        nfc,
        add_prefix_space,
        ignore_merges,
    })
}

/// Reads GPT-2's `vocab.json` and `merges.txt` (a ByteLevel pre-tokenizer
/// without prefix space, no normalizer); `special` are added tokens matched in
/// the raw text.
pub(crate) fn from_vocab_merges(
    vocab_json: &Value,
    merges_txt: &str,
    special: &[&str],
) -> Result<Spec, FastBpeError> {
    let vocab = read_vocab(Some(vocab_json), "vocab.json")?;
    let merges = merges_txt
        .lines()
        .filter(|line| !line.starts_with("#version"))
        .enumerate()
        .map(|(i, line)| split_merge(line, i + 1))
        .collect::<Result<_, _>>()?;
    let added_json = Value::Array(
        special
            .iter()
            .map(|s| serde_json::json!({"content": s, "special": true}))
            .collect(),
    );
    let added = read_added_tokens(Some(&added_json), &vocab, false)?;
    Ok(Spec {
        vocab,
        merges,
        added,
        nfc: false,
        add_prefix_space: false,
        ignore_merges: false,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{FastBpeError, from_tokenizer_json, from_vocab_merges};

    /// A tiny byte-level BPE tokenizer.json: "a", "b", "ab" and the merge "a b".
    fn tiny() -> Value {
        json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [{"id": 3, "content": "<|endoftext|>", "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
            "normalizer": {"type": "NFC"},
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}
        })
    }

    fn refused(edit: impl FnOnce(&mut Value)) -> String {
        let mut value = tiny();
        edit(&mut value);
        match from_tokenizer_json(&value) {
            Err(FastBpeError::Unsupported(reason)) => reason,
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    fn invalid(edit: impl FnOnce(&mut Value)) -> String {
        let mut value = tiny();
        edit(&mut value);
        match from_tokenizer_json(&value) {
            Err(FastBpeError::Invalid(reason)) => reason,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn reads_a_supported_tokenizer() {
        let spec = from_tokenizer_json(&tiny()).expect("supported");
        assert!(spec.nfc && !spec.add_prefix_space && !spec.ignore_merges);
        assert_eq!(spec.merges, [("a".to_owned(), "b".to_owned())]);
        // Not in the model's vocabulary: the next id after it, as `tokenizers` assigns.
        assert_eq!(spec.added[0].id, 3);
        let mut pairs = tiny();
        pairs["model"]["merges"] = json!([["a", "b"]]);
        pairs["normalizer"] = Value::Null;
        pairs["model"]["ignore_merges"] = true.into();
        let spec = from_tokenizer_json(&pairs).expect("supported");
        assert!(!spec.nfc && spec.ignore_merges);
        assert_eq!(spec.merges.len(), 1);
    }

    #[test]
    fn refuses_what_it_cannot_reproduce_with_a_reason() {
        assert!(refused(|v| v["model"]["dropout"] = json!(0.1)).contains("dropout"));
        assert!(refused(|v| v["model"]["type"] = json!("WordPiece")).contains("WordPiece"));
        assert!(
            refused(|v| v["model"]["continuing_subword_prefix"] = json!("##"))
                .contains("continuing_subword_prefix")
        );
        assert!(refused(|v| v["normalizer"] = json!({"type": "NFKC"})).contains("NFKC"));
        assert!(
            refused(|v| v["pre_tokenizer"] = json!({"type": "Metaspace"})).contains("Metaspace")
        );
        assert!(refused(|v| v["pre_tokenizer"]["use_regex"] = false.into()).contains("use_regex"));
        assert!(refused(|v| v["pre_tokenizer"] = Value::Null).contains("pre-tokenizer"));
        assert!(
            refused(|v| v["post_processor"] = json!({"type": "TemplateProcessing"}))
                .contains("TemplateProcessing")
        );
        assert!(refused(|v| v["truncation"] = json!({"max_length": 8})).contains("truncation"));
        assert!(refused(|v| v["added_tokens"][0]["rstrip"] = true.into()).contains("rstrip"));
        assert!(
            refused(|v| v["added_tokens"][0]["single_word"] = true.into()).contains("single_word")
        );
    }

    #[test]
    fn malformed_files_say_what_was_expected() {
        assert!(invalid(|v| v["model"]["merges"] = json!(["a b c"])).contains("merge 1"));
        assert!(invalid(|v| v["model"]["merges"] = json!([7])).contains("merge 1"));
        assert!(invalid(|v| v["model"]["vocab"] = json!(["a"])).contains("object"));
        assert!(invalid(|v| v["model"]["vocab"]["a"] = json!(-1)).contains("\"a\""));
        assert!(invalid(|v| v["normalizer"] = json!({"kind": "NFC"})).contains("type"));
        assert!(
            invalid(|v| v["pre_tokenizer"]["add_prefix_space"] = json!("yes"))
                .contains("add_prefix_space")
        );
        assert!(invalid(|v| v["added_tokens"] = json!([{"id": 9}])).contains("content"));
        assert!(
            invalid(|v| {
                v.as_object_mut().map(|o| o.remove("model"));
            })
            .contains("model")
        );
    }

    #[test]
    fn vocab_and_merges_files() {
        let vocab = json!({"a": 0, "b": 1, "ab": 2, "<|endoftext|>": 3});
        let spec =
            from_vocab_merges(&vocab, "#version: 0.2\na b\n", &["<|endoftext|>"]).expect("valid");
        assert_eq!(spec.merges.len(), 1);
        assert_eq!(spec.added[0].id, 3);
        let err = from_vocab_merges(&vocab, "#version: 0.2\na b\nab\n", &[]).expect_err("bad line");
        assert!(err.to_string().contains("merge 2"), "{err}");
    }
}
