//! One JSON line, read for the wanted keys only: their values are decoded,
//! every other value is skipped by the parser without being built (no value
//! tree, no allocation for what is not kept).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::json_scan;

/// lm_dataformat joins a list of strings with this.
pub(crate) const PARAGRAPH_JOINER: &str = "\n\n";

/// The text under a key, or what was found there instead (`"a number"`).
pub(crate) type Text = Result<String, &'static str>;

/// What a JSON line holds.
#[derive(Debug, PartialEq)]
pub(crate) enum Line {
    /// A bare JSON string (the legacy one-document-a-string form).
    String(String),
    /// An object: for each wanted key, by its first place in the key list,
    /// the text of its last occurrence, if any.
    Object(Vec<Option<Text>>),
    /// Any other JSON value: its kind (`"a list"`).
    Other(&'static str),
}

/// Parses `line` as one JSON value (trailing whitespace only), keeping the
/// values under `keys`: by hand for the common shape (see `json_scan`),
/// else by serde_json.
pub(crate) fn parse(line: &str, keys: &[String]) -> Result<Line, serde_json::Error> {
    match json_scan::scan(line, keys) {
        Some(parsed) => Ok(parsed),
        None => parse_with_serde(line, keys),
    }
}

/// [`parse`] by serde_json alone.
pub(super) fn parse_with_serde(line: &str, keys: &[String]) -> Result<Line, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(line);
    let parsed = LineSeed(keys).deserialize(&mut de)?;
    de.end()?;
    Ok(parsed)
}

struct LineSeed<'k>(&'k [String]);

impl<'de> DeserializeSeed<'de> for LineSeed<'_> {
    type Value = Line;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Line, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LineSeed<'_> {
    type Value = Line;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object or string")
    }

    fn visit_str<E>(self, v: &str) -> Result<Line, E> {
        Ok(Line::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Line, E> {
        Ok(Line::String(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Line, A::Error> {
        let mut texts = vec![None; self.0.len()];
        while let Some(wanted) = map.next_key_seed(KeySeed(self.0))? {
            match wanted {
                Some(i) => texts[i] = Some(map.next_value::<TextOf>()?.0),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Line::Object(texts))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Line, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(Line::Other("a list"))
    }

    fn visit_unit<E>(self) -> Result<Line, E> {
        Ok(Line::Other("null"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Line, E> {
        Ok(Line::Other("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Line, E> {
        Ok(Line::Other("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Line, E> {
        Ok(Line::Other("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Line, E> {
        Ok(Line::Other("a number"))
    }
}

/// An object key: the index of its first place among the wanted keys, if wanted.
struct KeySeed<'k>(&'k [String]);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|k| k == v))
    }
}

/// A wanted key's value: a string, a list of strings (joined), or null (empty).
struct TextOf(Text);

impl<'de> de::Deserialize<'de> for TextOf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TextOf, D::Error> {
        d.deserialize_any(KindVisitor { in_list: false })
            .map(TextOf)
    }
}

/// A list item: a string, or the kind found.
struct Item(Text);

impl<'de> de::Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Item, D::Error> {
        d.deserialize_any(KindVisitor { in_list: true }).map(Item)
    }
}

/// Reads a value as text; anything else is consumed and named. Inside a
/// list (`in_list`), only strings are text and lists are not read further.
struct KindVisitor {
    in_list: bool,
}

impl KindVisitor {
    /// `kind` as found under a key, or as an item of its list.
    fn found<E>(&self, kind: &'static str, item: &'static str) -> Result<Text, E> {
        Ok(Err(if self.in_list { item } else { kind }))
    }
}

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Text;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E>(self, v: &str) -> Result<Text, E> {
        Ok(Ok(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Text, E> {
        Ok(Ok(v))
    }

    fn visit_unit<E>(self) -> Result<Text, E> {
        if self.in_list {
            Ok(Err("a list holding null"))
        } else {
            Ok(Ok(String::new()))
        }
    }

    fn visit_bool<E>(self, _: bool) -> Result<Text, E> {
        self.found("a boolean", "a list holding a boolean")
    }

    fn visit_i64<E>(self, _: i64) -> Result<Text, E> {
        self.found("a number", "a list holding a number")
    }

    fn visit_u64<E>(self, _: u64) -> Result<Text, E> {
        self.found("a number", "a list holding a number")
    }

    fn visit_f64<E>(self, _: f64) -> Result<Text, E> {
        self.found("a number", "a list holding a number")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Text, A::Error> {
        IgnoredAny.visit_map(map)?;
        self.found("an object", "a list holding an object")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text, A::Error> {
        if self.in_list {
            IgnoredAny.visit_seq(seq)?;
            return Ok(Err("a list holding a list"));
        }
        // The first item that is not a string decides; the rest is still read.
        let mut parts = Vec::new();
        let mut refused = None;
        while let Some(Item(item)) = seq.next_element()? {
            match item {
                Ok(part) if refused.is_none() => parts.push(part),
                Ok(_) => {}
                Err(kind) => refused = refused.or(Some(kind)),
            }
        }
        Ok(match refused {
            Some(kind) => Err(kind),
            None => Ok(parts.join(PARAGRAPH_JOINER)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    fn object(line: &str, k: &[&str]) -> Vec<Option<Text>> {
        match parse(line, &keys(k)).unwrap() {
            Line::Object(texts) => texts,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wanted_values_are_read_and_the_rest_skipped() {
        let line =
            r#"{"meta": {"a": [1, {"b": null}], "text": 5}, "text": ["p1", "p\u00e92"], "x": 1e5}"#;
        assert_eq!(object(line, &["text"]), [Some(Ok("p1\n\npé2".into()))]);
        assert_eq!(
            object(r#"{"q": "x", "a": null}"#, &["a", "q", "z"]),
            [Some(Ok(String::new())), Some(Ok("x".into())), None]
        );
        // The last of duplicate keys counts, as in a JSON map.
        assert_eq!(
            object(r#"{"t": 1, "t": "b"}"#, &["t"]),
            [Some(Ok("b".into()))]
        );
        assert_eq!(
            parse(r#""bare\ttext""#, &keys(&["t"])).unwrap(),
            Line::String("bare\ttext".into())
        );
    }

    #[test]
    fn other_values_are_named() {
        let found = |line: &str| object(line, &["t"]).remove(0).unwrap().unwrap_err();
        assert_eq!(found(r#"{"t": 5}"#), "a number");
        assert_eq!(found(r#"{"t": -5.5}"#), "a number");
        assert_eq!(found(r#"{"t": true}"#), "a boolean");
        assert_eq!(found(r#"{"t": {"a": 1}}"#), "an object");
        assert_eq!(found(r#"{"t": ["a", 1, null]}"#), "a list holding a number");
        assert_eq!(found(r#"{"t": [null]}"#), "a list holding null");
        assert_eq!(found(r#"{"t": [false]}"#), "a list holding a boolean");
        assert_eq!(found(r#"{"t": [[]]}"#), "a list holding a list");
        assert_eq!(found(r#"{"t": [{}]}"#), "a list holding an object");
        let top = |line: &str| parse(line, &keys(&["t"])).unwrap();
        assert_eq!(top("[1, [2]]"), Line::Other("a list"));
        assert_eq!(top("null"), Line::Other("null"));
        assert_eq!(top(" 3 "), Line::Other("a number"));
        assert_eq!(top("true"), Line::Other("a boolean"));
    }

    #[test]
    fn invalid_json_is_refused_as_serde_json_refuses_it() {
        for line in [
            "{not json",
            r#"{"t": "a"} x"#,
            r#"{"t": "a", "u": [1,}"#,
            r#"{"t": "a\q"}"#,
            "",
        ] {
            let ours = parse(line, &keys(&["t"])).unwrap_err().to_string();
            let value = serde_json::from_str::<serde_json::Value>(line)
                .unwrap_err()
                .to_string();
            assert_eq!(ours, value, "{line}");
        }
    }
}
