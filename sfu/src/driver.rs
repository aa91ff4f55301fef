//! The thin tokio driver: one UDP socket for every peer, a command channel for signaling.
//!
//! The driver owns the [`Sfu`] core. Each turn it drains the core's output (sending datagrams,
//! logging events), then waits for the first of: a datagram, a command, the core's deadline.
//! Time is read through `tokio::time::Instant`, so paused-time tests control it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::{
    Input, Output, PeerId, Published, Sfu, SfuConfig, SfuError, SfuEvent, SfuStats, StreamId,
    Subscribed,
};

/// Largest datagram accepted on the media port; bigger ones are truncated by the kernel and
/// then dropped as malformed by the engine.
const RECV_BUFFER: usize = 2048;
/// Commands queued before callers wait (backpressure on the HTTP side).
const COMMAND_QUEUE: usize = 256;

enum Command {
    Publish {
        stream: StreamId,
        offer: String,
        reply: oneshot::Sender<Result<Published, SfuError>>,
    },
    Subscribe {
        stream: StreamId,
        offer: String,
        reply: oneshot::Sender<Result<Subscribed, SfuError>>,
    },
    Trickle {
        peer: PeerId,
        candidates: Vec<String>,
        reply: oneshot::Sender<Result<usize, SfuError>>,
    },
    Close {
        peer: PeerId,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    PeerInfo {
        peer: PeerId,
        reply: oneshot::Sender<Option<(StreamId, bool)>>,
    },
    IsLive {
        stream: StreamId,
        reply: oneshot::Sender<bool>,
    },
    Stats {
        reply: oneshot::Sender<SfuStats>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A cheap, cloneable handle to the running SFU.
#[derive(Clone)]
pub struct SfuHandle {
    tx: mpsc::Sender<Command>,
    local_addr: SocketAddr,
    events: Arc<tokio::sync::broadcast::Sender<SfuEvent>>,
}

impl SfuHandle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| SfuError::Unavailable)?;
        rx.await.map_err(|_| SfuError::Unavailable)
    }

    /// Accept a WHIP offer (replaces the stream's publisher if there is one).
    pub async fn publish(&self, stream: StreamId, offer: String) -> Result<Published, SfuError> {
        self.call(|reply| Command::Publish {
            stream,
            offer,
            reply,
        })
        .await?
    }

    /// Accept a WHEP offer.
    pub async fn subscribe(&self, stream: StreamId, offer: String) -> Result<Subscribed, SfuError> {
        self.call(|reply| Command::Subscribe {
            stream,
            offer,
            reply,
        })
        .await?
    }

    /// Trickle ICE candidates (`a=candidate:` lines) to a session.
    pub async fn trickle(&self, peer: PeerId, candidates: Vec<String>) -> Result<usize, SfuError> {
        self.call(|reply| Command::Trickle {
            peer,
            candidates,
            reply,
        })
        .await?
    }

    /// End a session.
    pub async fn close(&self, peer: PeerId) -> Result<(), SfuError> {
        self.call(|reply| Command::Close { peer, reply }).await?
    }

    /// Stream and role of a session, if it exists.
    pub async fn peer_info(&self, peer: PeerId) -> Result<Option<(StreamId, bool)>, SfuError> {
        self.call(|reply| Command::PeerInfo { peer, reply }).await
    }

    /// Whether a stream has a publisher.
    pub async fn is_live(&self, stream: StreamId) -> Result<bool, SfuError> {
        self.call(|reply| Command::IsLive { stream, reply }).await
    }

    /// Counters and gauges.
    pub async fn stats(&self) -> Result<SfuStats, SfuError> {
        self.call(|reply| Command::Stats { reply }).await
    }

    /// Close every session and stop the driver.
    pub async fn shutdown(&self) {
        let _ = self.call(|reply| Command::Shutdown { reply }).await;
    }

    /// The media socket's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Subscribe to SFU events (stream live/offline, sessions).
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<SfuEvent> {
        self.events.subscribe()
    }
}

/// Start the driver on `socket`. The task ends after [`SfuHandle::shutdown`] or when every
/// handle is dropped.
pub fn spawn(
    socket: UdpSocket,
    config: SfuConfig,
    seed: u64,
) -> std::io::Result<(SfuHandle, JoinHandle<()>)> {
    let local_addr = socket.local_addr()?;
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let (events, _) = tokio::sync::broadcast::channel(256);
    let events = Arc::new(events);
    let sfu = Sfu::new(config, seed, now());
    let task = tokio::spawn(run(socket, sfu, rx, events.clone()));
    Ok((
        SfuHandle {
            tx,
            local_addr,
            events,
        },
        task,
    ))
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

async fn run(
    socket: UdpSocket,
    mut sfu: Sfu,
    mut rx: mpsc::Receiver<Command>,
    events: Arc<tokio::sync::broadcast::Sender<SfuEvent>>,
) {
    let local = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut buf = vec![0u8; RECV_BUFFER];
    sfu.handle_input(Input::Timeout(now()));
    loop {
        let deadline = flush(&socket, &mut sfu, &events).await;
        let wait = tokio::time::Instant::from_std(deadline)
            .max(tokio::time::Instant::now() + Duration::from_millis(1));
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, from)) => sfu.handle_input(Input::Datagram { at: now(), from, to: local, data: &buf[..n] }),
                // ICMP errors surface here on Linux (port unreachable from a gone peer).
                Err(e) => tracing::debug!(error = %e, "udp receive error"),
            },
            cmd = rx.recv() => match cmd {
                Some(Command::Shutdown { reply }) => {
                    sfu.close_all();
                    flush(&socket, &mut sfu, &events).await;
                    let _ = reply.send(());
                    return;
                }
                Some(cmd) => handle_command(&mut sfu, cmd),
                None => {
                    sfu.close_all();
                    flush(&socket, &mut sfu, &events).await;
                    return;
                }
            },
            () = tokio::time::sleep_until(wait) => sfu.handle_input(Input::Timeout(now())),
        }
    }
}

async fn flush(
    socket: &UdpSocket,
    sfu: &mut Sfu,
    events: &tokio::sync::broadcast::Sender<SfuEvent>,
) -> std::time::Instant {
    loop {
        match sfu.poll_output() {
            Output::Transmit(t) => {
                if let Err(e) = socket.send_to(&t.data, t.to).await {
                    tracing::debug!(error = %e, to = %t.to, "udp send failed");
                }
            }
            Output::Event(e) => {
                let _ = events.send(e);
            }
            Output::Timeout(t) => return t,
        }
    }
}

fn handle_command(sfu: &mut Sfu, cmd: Command) {
    let at = now();
    sfu.handle_input(Input::Timeout(at));
    match cmd {
        Command::Publish {
            stream,
            offer,
            reply,
        } => {
            let _ = reply.send(sfu.publish(at, stream, &offer));
        }
        Command::Subscribe {
            stream,
            offer,
            reply,
        } => {
            let _ = reply.send(sfu.subscribe(at, stream, &offer));
        }
        Command::Trickle {
            peer,
            candidates,
            reply,
        } => {
            let _ = reply.send(sfu.add_remote_candidates(peer, &candidates));
        }
        Command::Close { peer, reply } => {
            let _ = reply.send(sfu.close(peer));
        }
        Command::PeerInfo { peer, reply } => {
            let _ = reply.send(sfu.peer_info(peer));
        }
        Command::IsLive { stream, reply } => {
            let _ = reply.send(sfu.is_live(&stream));
        }
        Command::Stats { reply } => {
            let _ = reply.send(sfu.stats());
        }
        Command::Shutdown { reply } => {
            let _ = reply.send(());
        }
    }
}
