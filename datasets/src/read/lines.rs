//! JSON lines: one document a line, lm_dataformat's way.

use std::io::{BufRead, BufReader, Read};

use super::json_line::{self, Line};
use super::source::{Halt, Origin, Sink};
use super::{Document, Position, ReadError};

/// Bytes read from the (decompressed) input at a time: one zstd block.
const READ_BUFFER: usize = 1 << 17;

/// Read JSON lines from `reader`, emitting a document (or a malformed-line
/// report) per non-blank line.
pub(crate) fn read_lines(reader: impl Read, origin: &Origin<'_>, sink: &Sink) -> Result<(), Halt> {
    let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
    let mut line = Vec::new();
    let mut line_no = 0u64;
    let mut offset = 0u64;
    loop {
        line.clear();
        // At most one byte past the limit is ever held.
        let n = (&mut reader)
            .take(origin.limit.saturating_add(1))
            .read_until(b'\n', &mut line)
            .map_err(|e| origin.io_error(e))?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        let start = offset;
        offset += n as u64;
        if n as u64 > origin.limit && line.last() != Some(&b'\n') {
            return Err(ReadError::TooLarge {
                location: origin.location(Position::Line(line_no)),
                what: "line",
                within: origin.within(),
                offset: start,
                limit: origin.limit,
            }
            .into());
        }
        let text = std::str::from_utf8(&line).map_err(|e| ReadError::InvalidUtf8 {
            location: origin.location(Position::Line(line_no)),
            offset: start + e.valid_up_to() as u64,
            what: origin.within(),
        })?;
        if text.trim().is_empty() {
            continue;
        }
        sink.emit(parse_line(text, origin, line_no))?;
    }
}

/// One line: a JSON object with the keys, or (legacy) a bare JSON string.
fn parse_line(line: &str, origin: &Origin<'_>, line_no: u64) -> Result<Document, ReadError> {
    let position = Position::Line(line_no);
    let malformed = |reason: String| ReadError::Malformed {
        location: origin.location(position),
        reason,
    };
    let parsed = json_line::parse(line, origin.keys)
        .map_err(|e| malformed(format!("not valid JSON: {e}")))?;
    match parsed {
        Line::String(text) => Ok(origin.document(text, position)),
        Line::Object(mut found) => {
            let mut texts = Vec::with_capacity(origin.keys.len());
            for key in origin.keys {
                // A key named twice is found once, as `Map::remove` would.
                let first = origin.keys.iter().position(|k| k == key).unwrap_or(0);
                let text = found[first]
                    .take()
                    .ok_or_else(|| malformed(format!("no key {key:?} in the JSON object")))?;
                texts.push(text.map_err(|found| {
                    malformed(format!(
                        "expected a string or a list of strings under {key:?}, found {found}"
                    ))
                })?);
            }
            Ok(Document {
                texts,
                location: origin.location(position),
            })
        }
        Line::Other(kind) => Err(malformed(format!(
            "expected a JSON object (or string), found {kind}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::source::Meter;
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    use std::sync::mpsc::sync_channel;

    fn read(input: &str, keys: &[&str]) -> Vec<Result<Document, ReadError>> {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let origin = Origin {
            file: Arc::from(Path::new("in.jsonl")),
            member: None,
            keys: &keys,
            limit: 1 << 20,
            meter: Arc::new(Meter::new(Arc::new(AtomicU64::new(0)))),
        };
        let (tx, rx) = sync_channel(1000);
        let sink = Sink::new(tx);
        assert!(read_lines(input.as_bytes(), &origin, &sink).is_ok());
        drop(sink);
        rx.iter().flatten().collect()
    }

    #[test]
    fn lm_dataformat_conventions() {
        let docs = read(
            "{\"text\": \"a\", \"meta\": {}}\n\"bare\"\n\n{\"text\": [\"p1\", \"p2\"]}\r\n{\"text\": null}",
            &["text"],
        );
        let texts: Vec<_> = docs
            .iter()
            .map(|d| d.as_ref().unwrap().texts[0].clone())
            .collect();
        assert_eq!(texts, ["a", "bare", "p1\n\np2", ""]);
        let d = docs[2].as_ref().unwrap();
        assert_eq!(d.location.position, Position::Line(4));
    }

    #[test]
    fn several_keys() {
        let docs = read("{\"q\": \"x\", \"a\": \"y\"}\n", &["q", "a"]);
        assert_eq!(docs[0].as_ref().unwrap().texts, ["x", "y"]);
    }

    #[test]
    fn malformed_lines_are_reported_with_their_line_and_reading_goes_on() {
        let docs = read(
            "{\"text\": \"ok\"}\n{not json\n{\"body\": \"x\"}\n{\"text\": 5}\n[1]\n{\"text\": [\"a\", 1]}\n{\"text\": \"end\"}\n",
            &["text"],
        );
        assert_eq!(docs.len(), 7);
        let errors: Vec<String> = docs
            .iter()
            .filter_map(|d| d.as_ref().err())
            .map(|e| {
                assert!(e.is_malformed());
                e.to_string()
            })
            .collect();
        assert_eq!(errors.len(), 5);
        assert!(errors[0].contains("in.jsonl line 2") && errors[0].contains("not valid JSON"));
        assert!(errors[1].contains("line 3") && errors[1].contains("no key \"text\""));
        assert!(errors[2].contains("line 4") && errors[2].contains("a number"));
        assert!(errors[3].contains("line 5") && errors[3].contains("a list"));
        assert!(errors[4].contains("line 6") && errors[4].contains("a list holding a number"));
        assert_eq!(docs[6].as_ref().unwrap().texts, ["end"]);
    }

    #[test]
    fn invalid_utf8_ends_the_stream_with_its_offset() {
        let keys = vec!["text".to_string()];
        let origin = Origin {
            file: Arc::from(Path::new("in.jsonl")),
            member: None,
            keys: &keys,
            limit: 1 << 20,
            meter: Arc::new(Meter::new(Arc::new(AtomicU64::new(0)))),
        };
        let (tx, _rx) = sync_channel(10);
        let input: &[u8] = b"{\"text\": \"ok\"}\n{\"text\": \"a\xffb\"}\n";
        match read_lines(input, &origin, &Sink::new(tx)) {
            Err(Halt::Fatal(e)) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("line 2") && msg.contains("byte offset 26"),
                    "{msg}"
                );
            }
            _ => panic!("expected a fatal error"),
        }
    }

    #[test]
    fn a_line_past_the_limit_ends_the_stream_with_its_line_and_offset() {
        let keys = vec!["text".to_string()];
        let origin = Origin {
            file: Arc::from(Path::new("in.jsonl")),
            member: None,
            keys: &keys,
            limit: 16,
            meter: Arc::new(Meter::new(Arc::new(AtomicU64::new(0)))),
        };
        // 15 bytes + newline fit exactly; the third line has 17 bytes before its end.
        let exact = "{\"text\": \"abc\"}";
        let input = format!("{exact}\n\"0123456789ab\"\n\"0123456789abcde\"\n");
        let (tx, rx) = sync_channel(10);
        match read_lines(input.as_bytes(), &origin, &Sink::new(tx)) {
            Err(Halt::Fatal(e)) => {
                let msg = e.to_string();
                assert!(
                    matches!(
                        e,
                        ReadError::TooLarge {
                            offset: 31,
                            limit: 16,
                            ..
                        }
                    ),
                    "{msg}"
                );
                assert!(
                    msg.contains("in.jsonl line 3") && msg.contains("from byte 31 of the file"),
                    "{msg}"
                );
            }
            _ => panic!("expected the long line to be refused"),
        }
        let read: Vec<_> = rx
            .try_iter()
            .flatten()
            .map(|d| d.unwrap().texts[0].clone())
            .collect();
        assert_eq!(read, ["abc", "0123456789ab"]);
        // No newline at the end: the limit holds for the last line too.
        let (tx, _rx) = sync_channel(10);
        let last = "\"0123456789abcdef\"";
        assert!(matches!(
            read_lines(last.as_bytes(), &origin, &Sink::new(tx)),
            Err(Halt::Fatal(ReadError::TooLarge { offset: 0, .. }))
        ));
    }
}
