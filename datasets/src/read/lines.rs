//! JSON lines: one document a line, lm_dataformat's way.

use std::io::{ErrorKind, Read};

use super::json_line::{self, Line};
use super::source::{Halt, Origin, Sink};
use super::{Document, Position, ReadError};

/// Bytes read from the (decompressed) input at a time, about; lines are
/// found in place in this buffer (it grows only for a longer line).
const READ_BUFFER: usize = 1 << 18;

/// Read JSON lines from `reader`, emitting a document (or a malformed-line
/// report) per non-blank line. A line may hold at most `origin.limit` bytes
/// before its newline; the buffer grows to at most one byte more than that.
pub(crate) fn read_lines(
    mut reader: impl Read,
    origin: &Origin<'_>,
    sink: &Sink,
) -> Result<(), Halt> {
    let limit = usize::try_from(origin.limit).unwrap_or(usize::MAX);
    let mut buf = vec![0u8; READ_BUFFER.min(limit.saturating_add(1))];
    // Unread bytes are `buf[start..end]`; none of `buf[start..scanned]` is a newline.
    let (mut start, mut scanned, mut end) = (0, 0, 0);
    let mut eof = false;
    let mut line_no = 0u64;
    // The input offset of `buf[start]`.
    let mut offset = 0u64;
    loop {
        let stop = match memchr::memchr(b'\n', &buf[scanned..end]) {
            Some(i) => scanned + i + 1,
            None if eof && start < end => end,
            None if eof => return Ok(()),
            None => {
                // No whole line: it is too long, or more must be read.
                if end - start > limit {
                    return Err(too_large(origin, line_no + 1, offset));
                }
                buf.copy_within(start..end, 0);
                (scanned, end, start) = (end - start, end - start, 0);
                if end == buf.len() {
                    buf.resize(buf.len().saturating_mul(2).min(limit.saturating_add(1)), 0);
                }
                match reader.read(&mut buf[end..]) {
                    Ok(0) => eof = true,
                    Ok(n) => end += n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(origin.io_error(e).into()),
                }
                continue;
            }
        };
        line_no += 1;
        let line = &buf[start..stop];
        if line.strip_suffix(b"\n").unwrap_or(line).len() > limit {
            return Err(too_large(origin, line_no, offset));
        }
        let text = std::str::from_utf8(line).map_err(|e| ReadError::InvalidUtf8 {
            location: origin.location(Position::Line(line_no)),
            offset: offset + e.valid_up_to() as u64,
            what: origin.within(),
        })?;
        if !text.trim().is_empty() {
            sink.emit(parse_line(text, origin, line_no))?;
        }
        offset += line.len() as u64;
        (start, scanned) = (stop, stop);
    }
}

/// Line `line_no`, from input offset `offset`, holds more than the limit.
fn too_large(origin: &Origin<'_>, line_no: u64, offset: u64) -> Halt {
    ReadError::TooLarge {
        location: origin.location(Position::Line(line_no)),
        what: "line",
        within: origin.within(),
        offset,
        limit: origin.limit,
    }
    .into()
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

    /// A reader that hands out at most `step` bytes a call (and is
    /// interrupted once in a while), to move line ends across reads.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
        calls: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(7) {
                return Err(std::io::Error::from(ErrorKind::Interrupted));
            }
            let n = self.step.min(buf.len()).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    fn read_from(reader: impl Read, limit: u64) -> Result<Vec<(Position, String)>, String> {
        let keys = vec!["text".to_string()];
        let origin = Origin {
            file: Arc::from(Path::new("in.jsonl")),
            member: None,
            keys: &keys,
            limit,
            meter: Arc::new(Meter::new(Arc::new(AtomicU64::new(0)))),
        };
        let (tx, rx) = sync_channel(100_000);
        let outcome = read_lines(reader, &origin, &Sink::new(tx));
        let docs = rx
            .iter()
            .flatten()
            .map(|d| {
                let d = d.unwrap();
                (d.location.position, d.texts[0].clone())
            })
            .collect();
        match outcome {
            Ok(()) => Ok(docs),
            Err(Halt::Fatal(e)) => Err(e.to_string()),
            Err(Halt::Closed) => Err("closed".into()),
        }
    }

    #[test]
    fn lines_are_the_same_however_the_input_arrives() {
        let long = "y".repeat(3 * READ_BUFFER + 17);
        let input = format!(
            "{{\"text\": \"a\"}}\r\n\n  \r\n{{\"text\": \"{long}\"}}\n\"b\\nc\"\n{{\"text\": \"last\"}}"
        );
        let expected = vec![
            (Position::Line(1), "a".to_string()),
            (Position::Line(4), long.clone()),
            (Position::Line(5), "b\nc".to_string()),
            (Position::Line(6), "last".to_string()),
        ];
        assert_eq!(read_from(input.as_bytes(), 1 << 30).unwrap(), expected);
        for step in [1, 2, 3, 1000, READ_BUFFER - 1, READ_BUFFER + 1] {
            let trickle = Trickle {
                bytes: input.as_bytes(),
                step,
                calls: 0,
            };
            assert_eq!(read_from(trickle, 1 << 30).unwrap(), expected, "{step}");
        }
        // A limit just above the long line's bytes (its newline not counted) holds it.
        let fits = long.len() as u64 + 12;
        assert_eq!(read_from(input.as_bytes(), fits).unwrap(), expected);
        let err = read_from(input.as_bytes(), fits - 1).unwrap_err();
        assert!(
            err.contains("in.jsonl line 4") && err.contains("byte 20 "),
            "{err}"
        );
        // Invalid UTF-8 in a line that arrives in pieces: its offset in the input.
        let bad = [input.as_bytes(), b"\n\"\xe9\""].concat();
        let trickle = Trickle {
            bytes: &bad,
            step: 5,
            calls: 0,
        };
        let err = read_from(trickle, 1 << 30).unwrap_err();
        let at = input.len() + 2;
        assert!(
            err.contains("line 7") && err.contains(&format!("byte offset {at}")),
            "{err}"
        );
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
