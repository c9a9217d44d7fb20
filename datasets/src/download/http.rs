//! One http(s) download into a `.part` file: resumed with a range request
//! when the server's validators allow it, retried with backoff on connection
//! errors and 5xx answers, never on other 4xx answers. Retries count failures
//! in a row: an attempt that got the file further than ever before starts
//! the count (and the backoff) afresh, so a long transfer over a flaky link
//! finishes as long as it keeps moving.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};

use super::record::{self, PartRecord, beside};
use super::{FetchError, Fetcher};

/// Why one attempt stopped.
enum Stop {
    /// Worth another attempt (the partial file is kept for a range request).
    Retry(String),
    /// Not worth retrying.
    Fatal(FetchError),
}

/// Download `url` into `part` until complete; returns the bytes transferred.
/// On a fatal error the partial file and its record are removed.
pub(super) fn download(
    fetcher: &Fetcher,
    url: &reqwest::Url,
    part: &Path,
) -> Result<u64, FetchError> {
    let meta_path = beside(part, ".json");
    let mut transferred = 0u64;
    let mut streak = Streak::new(part_size(part));
    loop {
        match attempt(fetcher, url, part, &meta_path, &mut transferred) {
            Ok(()) => return Ok(transferred),
            Err(Stop::Fatal(e)) => {
                record::remove_if_present(part);
                record::remove_if_present(&meta_path);
                return Err(e);
            }
            Err(Stop::Retry(why)) => {
                let failures = streak.failed(part_size(part));
                if failures > fetcher.retries {
                    return Err(FetchError::GaveUp {
                        url: url.to_string(),
                        attempts: failures,
                        last: why,
                    });
                }
                let wait = backoff(fetcher.backoff, failures);
                tracing::warn!(
                    "{url}: {why}; retry {failures} of {} in {:.1} s",
                    fetcher.retries,
                    wait.as_secs_f64()
                );
                std::thread::sleep(wait);
            }
        }
    }
}

fn part_size(part: &Path) -> u64 {
    std::fs::metadata(part).map_or(0, |m| m.len())
}

/// Failed attempts in a row, where an attempt that left the partial file
/// longer than it ever was before counts as progress and ends the row.
/// (A server that ignores ranges and drops the connection at the same place
/// each time makes no progress, and is given up on.)
struct Streak {
    furthest: u64,
    failures: u32,
}

impl Streak {
    fn new(have: u64) -> Streak {
        Streak {
            furthest: have,
            failures: 0,
        }
    }

    /// An attempt failed with `have` bytes in the partial file: the failures in a row.
    fn failed(&mut self, have: u64) -> u32 {
        if have > self.furthest {
            self.furthest = have;
            self.failures = 0;
        }
        self.failures += 1;
        self.failures
    }
}

/// `base`, doubled for each earlier failure, at most 60 s.
fn backoff(base: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(Duration::from_secs(60))
}

fn attempt(
    fetcher: &Fetcher,
    url: &reqwest::Url,
    part: &Path,
    meta_path: &Path,
    transferred: &mut u64,
) -> Result<(), Stop> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let meta: Option<PartRecord> = record::load(meta_path);
    let validator = meta
        .as_ref()
        .filter(|m| m.url == url.as_str())
        .and_then(|m| m.validator().map(str::to_string));
    let mut request = fetcher.client.get(url.clone());
    let resume_from = match (&validator, have) {
        (Some(v), n) if n > 0 => {
            request = request
                .header(RANGE, format!("bytes={n}-"))
                .header(IF_RANGE, v.as_str());
            n
        }
        _ => 0,
    };
    let response = request
        .send()
        .map_err(|e| Stop::Retry(format!("request failed: {}", error_chain(&e))))?;
    let status = response.status();
    let (offset, total) = match status {
        StatusCode::PARTIAL_CONTENT => {
            let range = response
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range);
            match range {
                Some((start, total)) if start == resume_from => (start, total),
                _ => {
                    // A range we did not ask for: start over.
                    record::remove_if_present(part);
                    return Err(Stop::Retry(format!(
                        "the server answered a range request with an unexpected Content-Range {:?}",
                        response.headers().get(CONTENT_RANGE)
                    )));
                }
            }
        }
        StatusCode::OK => {
            if resume_from > 0 {
                tracing::info!(
                    "{url}: the file changed on the server or ranges are not supported; starting over"
                );
            }
            let rec = PartRecord {
                url: url.to_string(),
                etag: header(&response, ETAG),
                last_modified: header(&response, LAST_MODIFIED),
            };
            if rec.validator().is_none() {
                tracing::debug!(
                    "{url}: no ETag or Last-Modified: an interrupted transfer will restart from zero"
                );
            }
            record::store(meta_path, &rec).map_err(Stop::Fatal)?;
            (0, response.content_length())
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            record::remove_if_present(part);
            return Err(Stop::Retry(format!(
                "range from byte {resume_from} not satisfiable; starting over"
            )));
        }
        s if s.is_server_error()
            || s == StatusCode::TOO_MANY_REQUESTS
            || s == StatusCode::REQUEST_TIMEOUT =>
        {
            return Err(Stop::Retry(format!("the server answered {s}")));
        }
        s => {
            return Err(Stop::Fatal(FetchError::Status {
                url: url.to_string(),
                status: s.as_u16(),
            }));
        }
    };
    if offset > 0 {
        tracing::info!("{url}: resuming at byte {offset}");
    }
    let mut out = open_part(part, offset).map_err(|e| Stop::Fatal(FetchError::io(part)(e)))?;
    let name = super::file_name_of(url.as_str());
    fetcher.progress.start(name, offset, total);
    let result = copy_body(fetcher, response, &mut out, part, transferred);
    fetcher.progress.finish();
    let written = result?;
    out.sync_all()
        .map_err(|e| Stop::Fatal(FetchError::io(part)(e)))?;
    let have_now = offset + written;
    match total {
        Some(t) if t != have_now => Err(Stop::Retry(format!(
            "the connection closed at byte {have_now} of {t}"
        ))),
        _ => Ok(()),
    }
}

/// Stream the body to `out`; a read error keeps what arrived and asks for a retry.
fn copy_body(
    fetcher: &Fetcher,
    mut response: reqwest::blocking::Response,
    out: &mut File,
    part: &Path,
    transferred: &mut u64,
) -> Result<u64, Stop> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut written = 0u64;
    loop {
        let n = match response.read(&mut buf) {
            Ok(0) => return Ok(written),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                out.sync_all()
                    .map_err(|e| Stop::Fatal(FetchError::io(part)(e)))?;
                return Err(Stop::Retry(format!(
                    "the transfer broke after {written} bytes: {e}"
                )));
            }
        };
        out.write_all(&buf[..n])
            .map_err(|e| Stop::Fatal(FetchError::io(part)(e)))?;
        written += n as u64;
        *transferred += n as u64;
        fetcher.progress.advance(n as u64);
    }
}

/// Open the partial file for appending at `offset` (truncating anything after it).
fn open_part(part: &Path, offset: u64) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(part)?;
    file.set_len(offset)?;
    let mut file = file;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset))?;
    Ok(file)
}

fn header(
    response: &reqwest::blocking::Response,
    name: reqwest::header::HeaderName,
) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `bytes START-END/TOTAL` -> (START, TOTAL if not `*`).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 5-9/10"), None);
        assert_eq!(parse_content_range("bytes x-9/10"), None);
    }

    #[test]
    fn progress_ends_a_row_of_failures() {
        let mut s = Streak::new(0);
        assert_eq!(s.failed(0), 1);
        assert_eq!(s.failed(0), 2);
        assert_eq!(s.failed(100), 1, "got further: a new row");
        assert_eq!(s.failed(100), 2);
        // Starting over and dying earlier is no progress.
        assert_eq!(s.failed(40), 3);
        assert_eq!(s.failed(100), 4);
        assert_eq!(s.failed(101), 1);
        assert_eq!(Streak::new(500).failed(300), 1);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_millis(500);
        assert_eq!(backoff(base, 1), base);
        assert_eq!(backoff(base, 2), base * 2);
        assert_eq!(backoff(base, 3), base * 4);
        assert_eq!(backoff(base, 40), Duration::from_secs(60));
    }
}
