//! A loopback TCP proxy between a client (the agent) and a server (the API server) that injects network
//! faults: cut every connection and refuse new ones, black-hole (hold every byte, as a partition does,
//! then deliver once it heals, as TCP retransmission would), or add latency to every chunk. Bytes pass
//! through unmodified, so TLS is end to end and the client verifies the server as usual.
//!
//! Plain threads (two per connection), so the proxy works from synchronous and asynchronous callers
//! alike and keeps running while the caller's runtime is blocked.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{Error, Result};

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes as they come.
    Pass,
    /// Every open connection was closed; new ones are accepted and closed at once.
    Cut,
    /// Nothing is forwarded (open and new connections stall); held bytes flow again after [`Mode::Pass`].
    BlackHole,
    /// Every chunk is delayed by this much in each direction.
    Latency(Duration),
}

struct Shared {
    mode: Mutex<Mode>,
    /// Open connections by id: (client side, server side).
    conns: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
    stop: AtomicBool,
    accepted: AtomicU64,
    refused: AtomicU64,
}

impl Shared {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running proxy; stopped (every connection closed) on drop.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

const POLL: Duration = Duration::from_millis(20);

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io {
        what: what.to_string(),
        source,
    }
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `upstream`.
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn start(upstream: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io("bind the proxy port"))?;
        let port = listener.local_addr().map_err(io("read the proxy port"))?.port();
        listener
            .set_nonblocking(true)
            .map_err(io("make the proxy listener non-blocking"))?;
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Pass),
            conns: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || accept_loop(&listener, upstream, &s))
            .map_err(io("start the proxy thread"))?;
        Ok(Proxy {
            port,
            shared,
            accept: Some(accept),
        })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Switches the mode; [`Mode::Cut`] also closes every open connection.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap_or_else(PoisonError::into_inner) = mode;
        if mode == Mode::Cut {
            close_all(&self.shared);
        }
    }

    /// Connections accepted and forwarded so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections closed at once because the proxy was in [`Mode::Cut`].
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        close_all(&self.shared);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Shuts every open connection down (both halves), which ends its pump threads.
fn close_all(shared: &Shared) {
    let conns = std::mem::take(&mut *shared.conns.lock().unwrap_or_else(PoisonError::into_inner));
    for (c, s) in conns.into_values() {
        let _ = c.shutdown(Shutdown::Both);
        let _ = s.shutdown(Shutdown::Both);
    }
}

fn accept_loop(listener: &TcpListener, upstream: SocketAddr, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                if shared.mode() == Mode::Cut {
                    shared.refused.fetch_add(1, Ordering::Relaxed);
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                if let Err(error) = connect(client, upstream, shared) {
                    tracing::debug!(%error, "proxy connection failed");
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(error) => {
                tracing::debug!(%error, "proxy accept failed");
                std::thread::sleep(POLL);
            }
        }
    }
}

fn connect(client: TcpStream, upstream: SocketAddr, shared: &Arc<Shared>) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))?;
    for s in [&client, &server] {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
    }
    let id = shared.accepted.fetch_add(1, Ordering::Relaxed);
    shared
        .conns
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, (client.try_clone()?, server.try_clone()?));
    let (c2, s2) = (client.try_clone()?, server.try_clone()?);
    let (sa, sb) = (Arc::clone(shared), Arc::clone(shared));
    std::thread::Builder::new()
        .name("fault-proxy-up".into())
        .spawn(move || pump(client, server, id, &sa))?;
    std::thread::Builder::new()
        .name("fault-proxy-down".into())
        .spawn(move || pump(s2, c2, id, &sb))?;
    Ok(())
}

/// Copies `from` to `to` under the current mode until either side closes; then closes both and
/// forgets them.
fn pump(mut from: TcpStream, mut to: TcpStream, id: u64, shared: &Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        // Hold the chunk while black-holed (nothing more is read, so the sender's window fills as
        // behind a partition).
        loop {
            match shared.mode() {
                Mode::BlackHole if !shared.stop.load(Ordering::Relaxed) => std::thread::sleep(POLL),
                Mode::Latency(d) => {
                    std::thread::sleep(d);
                    break;
                }
                _ => break,
            }
        }
        if shared.mode() == Mode::Cut || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    shared
        .conns
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&id);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Instant;

    /// An echo server on loopback.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got)?;
        Ok(got)
    }

    fn dial(p: &Proxy) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", p.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    #[test]
    fn passes_bytes_unmodified() {
        let p = Proxy::start(echo()).unwrap();
        let mut s = dial(&p);
        assert_eq!(roundtrip(&mut s, b"hello").unwrap(), b"hello");
        assert_eq!(p.accepted(), 1);
    }

    #[test]
    fn cut_closes_open_connections_and_refuses_new_ones_until_pass() {
        let p = Proxy::start(echo()).unwrap();
        let mut s = dial(&p);
        assert_eq!(roundtrip(&mut s, b"a").unwrap(), b"a");
        p.set_mode(Mode::Cut);
        assert!(
            roundtrip(&mut s, b"b").is_err(),
            "the open connection survived a cut"
        );
        let mut t = dial(&p);
        assert!(
            roundtrip(&mut t, b"c").is_err(),
            "a new connection was forwarded while cut"
        );
        assert!(p.refused() >= 1);
        p.set_mode(Mode::Pass);
        let mut u = dial(&p);
        assert_eq!(roundtrip(&mut u, b"d").unwrap(), b"d");
    }

    #[test]
    fn black_hole_holds_bytes_and_delivers_them_after_it_heals() {
        let p = Proxy::start(echo()).unwrap();
        let mut s = dial(&p);
        assert_eq!(roundtrip(&mut s, b"a").unwrap(), b"a");
        p.set_mode(Mode::BlackHole);
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        s.write_all(b"held").unwrap();
        let mut buf = [0u8; 4];
        let e = s.read_exact(&mut buf).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{e}"
        );
        p.set_mode(Mode::Pass);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"held");
    }

    #[test]
    fn latency_delays_each_direction() {
        let p = Proxy::start(echo()).unwrap();
        let mut s = dial(&p);
        assert_eq!(roundtrip(&mut s, b"warm").unwrap(), b"warm");
        p.set_mode(Mode::Latency(Duration::from_millis(150)));
        let t = Instant::now();
        assert_eq!(roundtrip(&mut s, b"slow").unwrap(), b"slow");
        assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
    }
}
