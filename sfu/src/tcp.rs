//! ICE-TCP (RFC 6544) for the driver: a passive TCP listener on the same port number as the
//! UDP socket, for networks that block UDP. Each connection carries RFC 4571 frames (a 16-bit
//! big-endian length, then one STUN, DTLS, RTP or RTCP packet), which the core treats exactly
//! like datagrams ([`crate::Input::Framed`]). Connections are bounded in number, idle time and
//! queued output; a slow reader loses frames (as UDP would), never the driver's time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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

/// The driver loop's side: incoming events and the writer of each open connection.
pub(crate) struct TcpSide {
    pub events: mpsc::Receiver<TcpEvent>,
    writers: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    /// Frames dropped because a connection's queue was full or it was gone.
    pub dropped: u64,
}

impl TcpSide {
    /// Start accepting on `listener` (on the current runtime).
    pub fn start(listener: TcpListener) -> Self {
        let (tx, events) = mpsc::channel(IN_QUEUE);
        tokio::spawn(accept_loop(listener, tx));
        Self {
            events,
            writers: HashMap::new(),
            dropped: 0,
        }
    }

    /// Apply an open/close event; returns the frame of a `Frame` event.
    pub fn on_event(&mut self, event: TcpEvent) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        match event {
            TcpEvent::Opened { from, writer } => {
                self.writers.insert(from, writer);
                None
            }
            TcpEvent::Closed { from } => {
                self.writers.remove(&from);
                None
            }
            TcpEvent::Frame { from, to, data } => Some((from, to, data)),
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

async fn accept_loop(listener: TcpListener, tx: mpsc::Sender<TcpEvent>) {
    let open = Arc::new(AtomicUsize::new(0));
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
        open.fetch_add(1, Ordering::Relaxed);
        let tx = tx.clone();
        let open = open.clone();
        tokio::spawn(async move {
            connection(stream, from, tx).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn connection(stream: TcpStream, from: SocketAddr, tx: mpsc::Sender<TcpEvent>) {
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
        loop {
            let header = tokio::time::timeout(IDLE, reader.read_exact(&mut len)).await;
            if !matches!(header, Ok(Ok(_))) {
                return;
            }
            let n = usize::from(u16::from_be_bytes(len));
            let mut data = vec![0u8; n];
            let body = tokio::time::timeout(IDLE, reader.read_exact(&mut data)).await;
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
