//! A small static HTTP/1.1 server on 127.0.0.1 for the download tests: serves
//! byte strings by path, answers range requests (validated by `If-Range`
//! against a strong ETag), records every request, and injects faults on demand.
//! One thread per connection, `Connection: close` on every answer.

#![allow(dead_code)] // each test file uses a different part

pub mod fixtures;

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A fault served instead of the normal answer, once per entry, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Send the headers and only this many body bytes, then close the connection.
    DropAfter(usize),
    /// Answer with this status and no body.
    Status(u16),
    /// Send the body in pieces of `chunk` bytes with `pause_ms` between them.
    Slow { chunk: usize, pause_ms: u64 },
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub path: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub status: u16,
    /// Body bytes actually written to the socket.
    pub body_bytes: usize,
    /// When the request arrived, and when its answer was written.
    pub began: std::time::Instant,
    pub ended: std::time::Instant,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    faults: HashMap<String, VecDeque<Fault>>,
    log: Vec<Request>,
}

/// The server; stops when dropped.
pub struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    /// Connections accepted whose handler has not finished (and logged) yet.
    in_flight: Arc<AtomicUsize>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Start on an ephemeral loopback port.
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (st, sp, fl) = (
            Arc::clone(&state),
            Arc::clone(&stop),
            Arc::clone(&in_flight),
        );
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (st, fl) = (Arc::clone(&st), Arc::clone(&fl));
                fl.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let _ = handle(stream, &st);
                    fl.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Server {
            addr,
            state,
            stop,
            in_flight,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn base_url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Serve `bytes` at `/name`.
    pub fn put(&self, name: &str, bytes: Vec<u8>) {
        self.lock().files.insert(format!("/{name}"), bytes);
    }

    /// Queue faults for the next requests of `/name`.
    pub fn fault(&self, name: &str, faults: &[Fault]) {
        self.lock()
            .faults
            .entry(format!("/{name}"))
            .or_default()
            .extend(faults.iter().copied());
    }

    /// Every request so far. A client may finish reading before the
    /// server's handler has logged its answer: wait (at most 10 s) for the
    /// handlers still running.
    pub fn requests(&self) -> Vec<Request> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.in_flight.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self.lock().log.clone()
    }

    /// Body bytes sent for `/name`, all requests together.
    pub fn bytes_served(&self, name: &str) -> usize {
        let path = format!("/{name}");
        self.requests()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.body_bytes)
            .sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn etag_of(bytes: &[u8]) -> String {
    // FNV-1a: cheap, and changes when the content does.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    }
    format!("\"{:x}-{h:016x}\"", bytes.len())
}

fn handle(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let began = std::time::Instant::now();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let range = headers.get("range").cloned();
    let if_range = headers.get("if-range").cloned();
    let (file, fault) = {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        let fault = st.faults.get_mut(&path).and_then(VecDeque::pop_front);
        (st.files.get(&path).cloned(), fault)
    };
    let mut out = stream;
    let (status, body_bytes) = match (file, fault) {
        (_, Some(Fault::Status(code))) => {
            respond(&mut out, code, &[], &[], None, None)?;
            (code, 0)
        }
        (None, _) => {
            respond(&mut out, 404, &[], b"not found\n", None, None)?;
            (404, 10)
        }
        (Some(bytes), fault) => {
            let etag = etag_of(&bytes);
            let validated = if_range.as_deref().is_none_or(|v| v == etag);
            let start = range
                .as_deref()
                .filter(|_| validated)
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<usize>().ok());
            let (limit, pace) = match fault {
                Some(Fault::DropAfter(n)) => (Some(n), None),
                Some(Fault::Slow { chunk, pause_ms }) => (None, Some((chunk.max(1), pause_ms))),
                _ => (None, None),
            };
            let common = [
                ("ETag".to_string(), etag.clone()),
                (
                    "Last-Modified".to_string(),
                    "Sat, 28 Nov 2026 12:00:00 GMT".to_string(),
                ),
                ("Accept-Ranges".to_string(), "bytes".to_string()),
            ];
            match start {
                Some(s) if s >= bytes.len() => {
                    respond(&mut out, 416, &common, &[], None, None)?;
                    (416, 0)
                }
                Some(s) => {
                    let mut h = common.to_vec();
                    h.push((
                        "Content-Range".to_string(),
                        format!("bytes {s}-{}/{}", bytes.len() - 1, bytes.len()),
                    ));
                    let sent = respond(&mut out, 206, &h, &bytes[s..], limit, pace)?;
                    (206, sent)
                }
                None => {
                    let body: &[u8] = if method == "HEAD" { &[] } else { &bytes };
                    let sent = respond(&mut out, 200, &common, body, limit, pace)?;
                    (200, sent)
                }
            }
        }
    };
    state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .log
        .push(Request {
            path,
            range,
            if_range,
            status,
            body_bytes,
            began,
            ended: std::time::Instant::now(),
        });
    Ok(())
}

/// Write an answer; with `limit`, only that many body bytes, then close; with
/// `pace`, in (chunk, pause) steps. Returns body bytes sent.
fn respond(
    out: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    limit: Option<usize>,
    pace: Option<(usize, u64)>,
) -> std::io::Result<usize> {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    let n = limit.unwrap_or(body.len()).min(body.len());
    match pace {
        None => out.write_all(&body[..n])?,
        Some((chunk, pause)) => {
            for piece in body[..n].chunks(chunk) {
                out.write_all(piece)?;
                out.flush()?;
                std::thread::sleep(std::time::Duration::from_millis(pause));
            }
        }
    }
    out.flush()?;
    let _ = out.shutdown(Shutdown::Both);
    Ok(n)
}
