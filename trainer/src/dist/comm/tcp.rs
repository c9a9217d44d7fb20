//! Ranks as processes, connected over TCP after a rendezvous at `MASTER_ADDR`.
//!
//! The rendezvous works like torch's TCPStore: rank 0 listens at
//! `master_addr:master_port`; every other rank connects (retrying until the
//! timeout, since processes start at different moments) and introduces itself
//! with its rank, the world size it expects and the port of its own listener.
//! Rank 0 checks the introductions (one world size, every rank once) and
//! answers everyone with the table of addresses and a token for the run, or
//! with the reason it refuses. That connection stays as the link between the
//! rank and rank 0; then every rank connects to the lower ranks at their
//! listeners (presenting the token), so that each pair holds one socket.
//!
//! On the wire a message is a frame: a kind byte, a channel (`u64`) and a
//! length (`u64`), little-endian, then the bytes. A reader thread per peer
//! files the frames into that peer's [`Inbox`]; a closed socket (the process
//! died) marks the peer lost at once, so waits on it end with
//! [`CommError::PeerLost`]; a silent one ends them with [`CommError::Timeout`].
//! Writes wait at most the timeout too.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::CommError;
use super::mesh::{Inbox, Links, MeshComm};

/// Where this process sits and where the rendezvous is.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    pub rank: usize,
    pub world: usize,
    /// Host of rank 0 (a name or an address).
    pub master_addr: String,
    pub master_port: u16,
    /// How long the rendezvous may take, and how long any later wait on a
    /// silent peer lasts.
    pub timeout: Duration,
}

/// A rank of a group of processes; see [`MeshComm`] for the collectives.
pub type TcpComm = MeshComm<TcpLinks>;

/// One socket per peer, and what arrived on it.
pub struct TcpLinks {
    /// `None` at this rank's own index.
    writers: Vec<Option<Mutex<TcpStream>>>,
    inboxes: Vec<Arc<Inbox>>,
}

const MAGIC: &str = "neox-comm/1";
/// Frame kinds.
const DATA: u8 = 0;
const HANDSHAKE: u8 = 1;
const HEADER: usize = 17;
/// Larger frames are taken for garbage.
const MAX_FRAME: u64 = 1 << 40;
/// Reads report progress (keeping a long message's sender fresh) this often.
const CHUNK: usize = 1 << 20;

/// What ranks say to each other before the first collective.
#[derive(Debug, Serialize, Deserialize)]
enum Handshake {
    Hello {
        magic: String,
        rank: usize,
        world: usize,
        /// The port of this rank's listener (to rank 0) or 0 (to a peer).
        port: u16,
        /// 0 to rank 0; the run's token to a peer.
        token: u64,
    },
    Table {
        token: u64,
        /// Every rank's listener; rank 0's entry is unused.
        addrs: Vec<SocketAddr>,
    },
    Refused {
        message: String,
    },
}

impl TcpComm {
    /// Joins the rendezvous and connects to every other rank. Returns when all
    /// `world` ranks have joined, or fails with [`CommError::Rendezvous`]
    /// after `timeout` (naming the ranks that did not come), or at once on a
    /// mismatched world size or a duplicate rank.
    pub fn connect(config: TcpConfig) -> Result<TcpComm, CommError> {
        let TcpConfig {
            rank,
            world,
            timeout,
            ..
        } = config;
        let address = format!("{}:{}", config.master_addr, config.master_port);
        let fail = |message: String| CommError::Rendezvous {
            address: address.clone(),
            message,
        };
        if rank >= world {
            return Err(fail(format!(
                "rank {rank} is not a rank of a world of {world}"
            )));
        }
        let master = (config.master_addr.as_str(), config.master_port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| fail("cannot resolve the address".into()))?;
        let deadline = Instant::now() + timeout;
        let streams = if world == 1 {
            vec![None]
        } else if rank == 0 {
            lead(master, world, deadline).map_err(fail)?
        } else {
            join(master, rank, world, deadline).map_err(fail)?
        };
        Ok(MeshComm::world(
            Arc::new(TcpLinks::start(streams, timeout).map_err(fail)?),
            rank,
            world,
            timeout,
        ))
    }
}

/// Rank 0: takes the introductions, checks them, answers with the table.
fn lead(
    master: SocketAddr,
    world: usize,
    deadline: Instant,
) -> Result<Vec<Option<TcpStream>>, String> {
    let listener = TcpListener::bind(SocketAddr::new(listen_ip(master.ip()), master.port()))
        .map_err(|e| format!("rank 0 cannot listen: {e}"))?;
    let token = run_token();
    let mut streams: Vec<Option<TcpStream>> = (0..world).map(|_| None).collect();
    let mut addrs = vec![master; world];
    let refuse = |streams: &mut [Option<TcpStream>], message: String| {
        for s in streams.iter_mut().flatten() {
            let _ = write_handshake(
                s,
                &Handshake::Refused {
                    message: message.clone(),
                },
            );
        }
        message
    };
    while streams.iter().skip(1).any(Option::is_none) {
        let Some((mut stream, from)) = accept(&listener, deadline)? else {
            let missing: Vec<usize> = (1..world).filter(|&r| streams[r].is_none()).collect();
            let message = format!("ranks {missing:?} did not join in time");
            return Err(refuse(&mut streams, message));
        };
        let Ok(Handshake::Hello {
            magic,
            rank,
            world: theirs,
            port,
            ..
        }) = read_handshake(&mut stream, deadline)
        else {
            continue; // Not one of ours: ignore it.
        };
        if magic != MAGIC {
            continue;
        }
        let problem = if theirs != world {
            Some(format!(
                "rank {rank} (from {from}) expects a world of {theirs}; rank 0 expects {world}"
            ))
        } else if rank == 0 || rank >= world {
            Some(format!("a process at {from} claims rank {rank} of {world}"))
        } else if streams[rank].is_some() {
            Some(format!(
                "rank {rank} joined twice (the second time from {from})"
            ))
        } else {
            None
        };
        if let Some(message) = problem {
            let _ = write_handshake(
                &mut stream,
                &Handshake::Refused {
                    message: message.clone(),
                },
            );
            return Err(refuse(&mut streams, message));
        }
        addrs[rank] = SocketAddr::new(from.ip(), port);
        streams[rank] = Some(stream);
    }
    let table = Handshake::Table { token, addrs };
    for (r, s) in streams.iter_mut().enumerate() {
        if let Some(s) = s {
            write_handshake(s, &table).map_err(|e| format!("cannot answer rank {r}: {e}"))?;
        }
    }
    Ok(streams)
}

/// Rank r > 0: introduces itself to rank 0, then meets every other rank.
fn join(
    master: SocketAddr,
    rank: usize,
    world: usize,
    deadline: Instant,
) -> Result<Vec<Option<TcpStream>>, String> {
    let listener = TcpListener::bind(SocketAddr::new(listen_ip(master.ip()), 0))
        .map_err(|e| format!("rank {rank} cannot listen: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let mut streams: Vec<Option<TcpStream>> = (0..world).map(|_| None).collect();
    let mut to_master =
        connect(master, deadline).map_err(|e| format!("rank {rank} cannot reach rank 0: {e}"))?;
    let hello = |port, token| Handshake::Hello {
        magic: MAGIC.into(),
        rank,
        world,
        port,
        token,
    };
    write_handshake(&mut to_master, &hello(port, 0))
        .map_err(|e| format!("rank {rank} cannot introduce itself to rank 0: {e}"))?;
    let (token, addrs) = match read_handshake(&mut to_master, deadline) {
        Ok(Handshake::Table { token, addrs }) if addrs.len() == world => (token, addrs),
        Ok(Handshake::Refused { message }) => return Err(message),
        Ok(other) => return Err(format!("rank 0 answered {other:?}")),
        Err(e) => return Err(format!("rank {rank} got no answer from rank 0: {e}")),
    };
    streams[0] = Some(to_master);
    for (lower, &addr) in addrs.iter().enumerate().take(rank).skip(1) {
        let mut s = connect(addr, deadline)
            .map_err(|e| format!("rank {rank} cannot reach rank {lower} at {addr}: {e}"))?;
        write_handshake(&mut s, &hello(0, token))
            .map_err(|e| format!("rank {rank} cannot reach rank {lower} at {addr}: {e}"))?;
        streams[lower] = Some(s);
    }
    while streams.iter().skip(rank + 1).any(Option::is_none) {
        let Some((mut s, _)) = accept(&listener, deadline)? else {
            let missing: Vec<usize> = (rank + 1..world)
                .filter(|&r| streams[r].is_none())
                .collect();
            return Err(format!(
                "ranks {missing:?} did not connect to rank {rank} in time"
            ));
        };
        match read_handshake(&mut s, deadline) {
            Ok(Handshake::Hello {
                magic,
                rank: higher,
                token: theirs,
                ..
            }) if magic == MAGIC
                && theirs == token
                && higher > rank
                && higher < world
                && streams[higher].is_none() =>
            {
                streams[higher] = Some(s)
            }
            _ => continue, // Another run's or nobody's: ignore it.
        }
    }
    Ok(streams)
}

/// Listens on loopback for a loopback master, else on every interface.
fn listen_ip(master: IpAddr) -> IpAddr {
    match master {
        ip if ip.is_loopback() => ip,
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// A number that tells this run's connections from a stale one's.
fn run_token() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32) | 1
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
    } else {
        Ok(left)
    }
}

/// Connects, retrying until `deadline` while nobody listens yet.
fn connect(addr: SocketAddr, deadline: Instant) -> io::Result<TcpStream> {
    loop {
        match TcpStream::connect_timeout(&addr, remaining(deadline)?) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() + Duration::from_millis(50) < deadline => {
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::TimedOut
                ) {
                    return Err(e);
                }
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The next connection, or `None` at `deadline`.
fn accept(
    listener: &TcpListener,
    deadline: Instant,
) -> Result<Option<(TcpStream, SocketAddr)>, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((s, from)) => {
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                return Ok(Some((s, from)));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10))
            }
            Err(e) => return Err(format!("accept failed: {e}")),
        }
    }
    Ok(None)
}

fn header(kind: u8, channel: u64, len: usize) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0] = kind;
    h[1..9].copy_from_slice(&channel.to_le_bytes());
    h[9..].copy_from_slice(&(len as u64).to_le_bytes());
    h
}

fn write_frame(stream: &mut TcpStream, kind: u8, channel: u64, data: &[u8]) -> io::Result<()> {
    let head = header(kind, channel, data.len());
    if data.len() <= 1 << 16 {
        // One segment for small messages.
        let mut frame = Vec::with_capacity(HEADER + data.len());
        frame.extend_from_slice(&head);
        frame.extend_from_slice(data);
        stream.write_all(&frame)
    } else {
        stream.write_all(&head)?;
        stream.write_all(data)
    }
}

/// Reads one frame's header: its kind, channel and length.
fn read_header(stream: &mut TcpStream) -> io::Result<(u8, u64, usize)> {
    let mut h = [0u8; HEADER];
    stream.read_exact(&mut h)?;
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
    let len = word(&h[9..]);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is not a message of this protocol"),
        ));
    }
    Ok((h[0], word(&h[1..9]), len as usize))
}

fn write_handshake(stream: &mut TcpStream, message: &Handshake) -> io::Result<()> {
    let bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
    write_frame(stream, HANDSHAKE, 0, &bytes)
}

fn read_handshake(stream: &mut TcpStream, deadline: Instant) -> io::Result<Handshake> {
    stream.set_read_timeout(Some(remaining(deadline)?))?;
    let (kind, _, len) = read_header(stream)?;
    if kind != HANDSHAKE || len > 1 << 24 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a handshake",
        ));
    }
    let mut bytes = vec![0u8; len];
    stream.read_exact(&mut bytes)?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl TcpLinks {
    /// Starts a reader thread per connected peer.
    fn start(streams: Vec<Option<TcpStream>>, timeout: Duration) -> Result<TcpLinks, String> {
        let inboxes: Vec<Arc<Inbox>> = streams.iter().map(|_| Arc::new(Inbox::new())).collect();
        let mut writers = Vec::with_capacity(streams.len());
        for (peer, stream) in streams.into_iter().enumerate() {
            let Some(stream) = stream else {
                writers.push(None);
                continue;
            };
            let setup = |s: &TcpStream| -> io::Result<TcpStream> {
                s.set_nodelay(true)?;
                s.set_read_timeout(None)?;
                s.set_write_timeout(Some(timeout))?;
                s.try_clone()
            };
            let reader = setup(&stream).map_err(|e| format!("socket of rank {peer}: {e}"))?;
            let inbox = inboxes[peer].clone();
            thread::Builder::new()
                .name(format!("comm-rank{peer}"))
                .spawn(move || read_frames(reader, &inbox))
                .map_err(|e| format!("cannot start a reader thread: {e}"))?;
            writers.push(Some(Mutex::new(stream)));
        }
        Ok(TcpLinks { writers, inboxes })
    }
}

/// Files every frame from a peer into its inbox until the socket closes.
fn read_frames(mut stream: TcpStream, inbox: &Inbox) {
    let why = loop {
        let (kind, channel, len) = match read_header(&mut stream) {
            Ok(h) => h,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                break "its connection closed (the process ended or was killed)".to_string();
            }
            Err(e) => break format!("its connection failed: {e}"),
        };
        if kind != DATA {
            break format!("it sent a frame of unknown kind {kind}");
        }
        let mut data = vec![0u8; len];
        let read = data.chunks_mut(CHUNK).try_for_each(|chunk| {
            inbox.touch();
            stream.read_exact(chunk)
        });
        if let Err(e) = read {
            break format!("its connection failed in a message of {len} bytes: {e}");
        }
        inbox.push(channel, data);
    };
    inbox.close(&why);
}

impl Links for TcpLinks {
    fn send(
        &self,
        to: usize,
        channel: u64,
        data: &[u8],
        timeout: Duration,
        during: &'static str,
    ) -> Result<(), CommError> {
        let lost = |message| CommError::PeerLost {
            rank: to,
            during,
            message,
        };
        if let Some(message) = self.inboxes[to].lost() {
            return Err(lost(message));
        }
        let Some(writer) = &self.writers[to] else {
            return Err(lost("no connection to this rank".into()));
        };
        let mut stream = writer.lock().unwrap_or_else(|e| e.into_inner());
        write_frame(&mut stream, DATA, channel, data).map_err(|e| {
            // A half-written frame leaves the stream useless.
            let _ = stream.shutdown(std::net::Shutdown::Both);
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                self.inboxes[to].close("a write to it timed out");
                CommError::Timeout {
                    rank: to,
                    timeout,
                    during,
                }
            } else {
                self.inboxes[to].close(&format!("a write to it failed: {e}"));
                lost(format!("a write to it failed: {e}"))
            }
        })
    }

    fn inbox(&self, from: usize) -> &Inbox {
        &self.inboxes[from]
    }
}

impl Drop for TcpLinks {
    fn drop(&mut self) {
        // Ends the reader threads and tells the peers at once.
        for w in self.writers.iter().flatten() {
            let stream = w.lock().unwrap_or_else(|e| e.into_inner());
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}
