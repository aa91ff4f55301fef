//! ICE-TCP (RFC 6544) for the driver: a passive TCP listener on the same port number as the
//! UDP socket, for networks that block UDP. Each connection carries RFC 4571 frames (a 16-bit
//! big-endian length, then one STUN, DTLS, RTP or RTCP packet), which the core treats exactly
//! like datagrams ([`crate::Input::Framed`]). Connections are bounded in number (node-wide and
//! per client address), idle time and queued output; a connection must open with a STUN
//! request for a session's ufrag within a few seconds, or it is closed (an unauthenticated
//! socket holds no slot); a slow reader loses frames (as UDP would), never the driver's time.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Open ICE-TCP connections accepted at most; more are closed at once.
const MAX_CONNECTIONS: usize = 1024;
/// A connection with no frame for this long is closed (consent checks come every few seconds).
const IDLE: Duration = Duration::from_secs(30);
/// Frames queued towards one connection before further ones are dropped.
const OUT_QUEUE: usize = 1024;
/// Frames from all connections queued towards the driver loop.
const IN_QUEUE: usize = 4096;

/// What the connection tasks tell the driver loop.
pub(crate) enum TcpEvent {
    /// A connection opened; frames for `from` go to `writer`.
    Opened {
        from: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
    },
    /// One frame arrived.
    Frame {
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
    },
    /// The connection closed.
    Closed { from: SocketAddr },
}

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpLimits {
    /// Connections per client address (IPv6: per /64).
    pub per_ip: usize,
    /// The first frame must arrive within this.
    pub first_frame: Duration,
}

/// The driver loop's side: incoming events and the writer of each open connection.
pub(crate) struct TcpSide {
    pub events: mpsc::Receiver<TcpEvent>,
    writers: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    /// Connections whose first frame was accepted.
    opened: HashSet<SocketAddr>,
    /// Frames dropped because a connection's queue was full or it was gone.
    pub dropped: u64,
    /// Connections closed because their first frame was not a known session's STUN request.
    pub refused: u64,
}

impl TcpSide {
    /// Start accepting on `listener` (on the current runtime).
    pub fn start(listener: TcpListener, limits: TcpLimits) -> Self {
        let (tx, events) = mpsc::channel(IN_QUEUE);
        tokio::spawn(accept_loop(listener, tx, limits));
        Self {
            events,
            writers: HashMap::new(),
            opened: HashSet::new(),
            dropped: 0,
            refused: 0,
        }
    }

    /// Apply an open/close event; returns the frame of a `Frame` event. A connection whose
    /// first frame fails `opens(from, frame)` is closed (the frame is returned to be counted).
    pub fn on_event(
        &mut self,
        event: TcpEvent,
        opens: impl FnOnce(SocketAddr, &[u8]) -> bool,
    ) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        match event {
            TcpEvent::Opened { from, writer } => {
                self.writers.insert(from, writer);
                None
            }
            TcpEvent::Closed { from } => {
                self.writers.remove(&from);
                self.opened.remove(&from);
                None
            }
            TcpEvent::Frame { from, to, data } => {
                if self.opened.contains(&from) {
                    return Some((from, to, data));
                }
                if !opens(from, &data) {
                    // Dropping its writer ends the connection task. The frame still goes to
                    // the core, which counts it as the drop it is (unknown source, malformed).
                    self.writers.remove(&from);
                    self.refused += 1;
                    return Some((from, to, data));
                }
                self.opened.insert(from);
                Some((from, to, data))
            }
        }
    }

    /// Queue one packet for the connection from `to`, framed.
    pub fn send(&mut self, to: SocketAddr, data: &[u8]) {
        let Some(writer) = self.writers.get(&to) else {
            self.dropped += 1;
            return;
        };
        let Ok(len) = u16::try_from(data.len()) else {
            self.dropped += 1;
            return;
        };
        let mut frame = Vec::with_capacity(data.len() + 2);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(data);
        if writer.try_send(frame).is_err() {
            self.dropped += 1;
        }
    }
}

/// The key a client address is counted under (IPv6 per /64).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

async fn accept_loop(listener: TcpListener, tx: mpsc::Sender<TcpEvent>, limits: TcpLimits) {
    let open = Arc::new(AtomicUsize::new(0));
    let per_ip: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "ICE-TCP accept failed");
                // Out of descriptors and similar: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            tracing::warn!(%from, "ICE-TCP connection refused: {MAX_CONNECTIONS} already open");
            continue;
        }
        let key = address_key(from.ip());
        {
            let mut map = per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(key).or_default();
            if *n >= limits.per_ip {
                tracing::debug!(%from, "ICE-TCP connection refused: too many from this address");
                continue;
            }
            *n += 1;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let tx = tx.clone();
        let (open, per_ip) = (open.clone(), per_ip.clone());
        tokio::spawn(async move {
            connection(stream, from, tx, limits.first_frame).await;
            open.fetch_sub(1, Ordering::Relaxed);
            let mut map = per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&key);
                }
            }
        });
    }
}

async fn connection(
    stream: TcpStream,
    from: SocketAddr,
    tx: mpsc::Sender<TcpEvent>,
    first_frame: Duration,
) {
    let _ = stream.set_nodelay(true);
    let Ok(to) = stream.local_addr() else {
        return;
    };
    let (mut reader, mut writer) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    if tx
        .send(TcpEvent::Opened {
            from,
            writer: out_tx,
        })
        .await
        .is_err()
    {
        return;
    }
    let write = async {
        while let Some(frame) = out_rx.recv().await {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    let read = async {
        let mut len = [0u8; 2];
        // The first frame comes soon or never: an unauthenticated socket holds no slot long.
        let mut wait = first_frame.min(IDLE);
        loop {
            let header = tokio::time::timeout(wait, reader.read_exact(&mut len)).await;
            wait = IDLE;
            if !matches!(header, Ok(Ok(_))) {
                return;
            }
            let n = usize::from(u16::from_be_bytes(len));
            let mut data = vec![0u8; n];
            let body =
                tokio::time::timeout(first_frame.min(IDLE), reader.read_exact(&mut data)).await;
            if !matches!(body, Ok(Ok(_))) {
                return;
            }
            if tx.send(TcpEvent::Frame { from, to, data }).await.is_err() {
                return;
            }
        }
    };
    // Either side ending ends the connection.
    tokio::select! {
        () = read => {}
        () = write => {}
    }
    let _ = tx.send(TcpEvent::Closed { from }).await;
}
