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

use crate::relay_io::{RelayCommand, RelayIn, RelayNotice, RelaySinks};
use crate::tcp::{TcpEvent, TcpSide};

use crate::{
    IceRestarted, Input, Output, PeerId, Pin, Published, Sfu, SfuConfig, SfuError, SfuEvent,
    SfuStats, StreamId, SubscribeOptions, Subscribed,
};

/// Receive buffers: each holds one datagram or one GRO train of datagrams (64 KiB at most).
const RECV_SLOT_BYTES: usize = 64 * 1024;
/// Buffers filled per `recvmmsg`.
const RECV_SLOTS: usize = 8;
/// `recvmmsg` rounds before the core's output is flushed.
const RECV_ROUNDS: usize = 8;
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
        options: SubscribeOptions,
        reply: oneshot::Sender<Result<Subscribed, SfuError>>,
    },
    SetLayer {
        peer: PeerId,
        pin: Pin,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    RestartIce {
        peer: PeerId,
        ufrag: String,
        pwd: String,
        candidates: Vec<String>,
        reply: oneshot::Sender<Result<IceRestarted, SfuError>>,
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
    Relay(RelayCommand),
}

/// A cheap, cloneable handle to the running SFU.
#[derive(Clone)]
pub struct SfuHandle {
    tx: mpsc::Sender<Command>,
    local_addr: SocketAddr,
    events: Arc<tokio::sync::broadcast::Sender<SfuEvent>>,
    pub(crate) relay_in: mpsc::Sender<RelayIn>,
}

impl SfuHandle {
    pub(crate) async fn relay_command(&self, cmd: RelayCommand) -> Result<(), SfuError> {
        self.tx
            .send(Command::Relay(cmd))
            .await
            .map_err(|_| SfuError::Unavailable)
    }

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
    pub async fn subscribe(
        &self,
        stream: StreamId,
        offer: String,
        options: SubscribeOptions,
    ) -> Result<Subscribed, SfuError> {
        self.call(|reply| Command::Subscribe {
            stream,
            offer,
            options,
            reply,
        })
        .await?
    }

    /// Pin a viewer's simulcast layer (or give it back to its bandwidth estimate).
    pub async fn set_layer(&self, peer: PeerId, pin: Pin) -> Result<(), SfuError> {
        self.call(|reply| Command::SetLayer { peer, pin, reply })
            .await?
    }

    /// Restart a session's ICE with the client's new credentials.
    pub async fn restart_ice(
        &self,
        peer: PeerId,
        ufrag: String,
        pwd: String,
        candidates: Vec<String>,
    ) -> Result<IceRestarted, SfuError> {
        self.call(|reply| Command::RestartIce {
            peer,
            ufrag,
            pwd,
            candidates,
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

/// The running driver; await [`DriverTask::finished`] after [`SfuHandle::shutdown`].
pub struct DriverTask {
    done: oneshot::Receiver<()>,
}

impl DriverTask {
    /// Resolves when the driver has closed every session and stopped.
    pub async fn finished(self) {
        let _ = self.done.await;
    }
}

/// Start the driver on `socket`, on a dedicated OS thread with its own single-threaded
/// runtime: the hot loop never migrates between workers or waits behind HTTP tasks. It ends
/// after [`SfuHandle::shutdown`] or when every handle is dropped.
pub fn spawn(
    socket: UdpSocket,
    tcp: Option<tokio::net::TcpListener>,
    config: SfuConfig,
    seed: u64,
) -> std::io::Result<(SfuHandle, DriverTask)> {
    let local_addr = socket.local_addr()?;
    let std_socket = socket.into_std()?;
    let std_tcp = tcp.map(|l| l.into_std()).transpose()?;
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let (relay_in, relay_rx) = mpsc::channel(crate::relay_io::INGEST_QUEUE);
    let (events, _) = tokio::sync::broadcast::channel(256);
    let events = Arc::new(events);
    let (done_tx, done) = oneshot::channel();
    let thread_events = events.clone();
    std::thread::Builder::new()
        .name("aethex-sfu".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the SFU runtime");
                    return;
                }
            };
            rt.block_on(async move {
                let limits = crate::tcp::TcpLimits {
                    per_ip: config.tcp_per_ip.max(1),
                    first_frame: config.tcp_first_frame,
                };
                let tcp = match std_tcp.map(tokio::net::TcpListener::from_std).transpose() {
                    Ok(l) => l.map(|l| TcpSide::start(l, limits)),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot register the ICE-TCP listener");
                        None
                    }
                };
                match UdpSocket::from_std(std_socket) {
                    Ok(socket) => {
                        let sfu = Sfu::new(config, seed, now());
                        run(socket, tcp, sfu, rx, relay_rx, thread_events).await;
                    }
                    Err(e) => tracing::error!(error = %e, "cannot register the media socket"),
                }
            });
            let _ = done_tx.send(());
        })?;
    Ok((
        SfuHandle {
            tx,
            local_addr,
            events,
            relay_in,
        },
        DriverTask { done },
    ))
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Kernel buffers asked for on the media socket. A publisher's keyframe arrives as a burst of
/// 100+ packets (about twice their size in kernel accounting), which overflowed Linux's
/// 208 KiB default while the driver was fanning out the burst's first packets: a lost keyframe
/// packet, seen as a viewer that never decoded (measured with aiortc, H264 at 640x360). The
/// kernel caps the request at `net.core.rmem_max` / `wmem_max`.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

fn size_buffers(socket: &UdpSocket) {
    let s = socket2::SockRef::from(socket);
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    let recv = s.recv_buffer_size().unwrap_or(0);
    let send = s.send_buffer_size().unwrap_or(0);
    tracing::debug!(recv, send, "media socket buffers");
    if recv < SOCKET_BUFFER_BYTES / 2 {
        tracing::warn!(
            recv,
            wanted = SOCKET_BUFFER_BYTES,
            "the media socket's receive buffer is small; keyframe bursts may be dropped \
             (raise net.core.rmem_max)"
        );
    }
}

async fn run(
    socket: UdpSocket,
    mut tcp: Option<TcpSide>,
    mut sfu: Sfu,
    mut rx: mpsc::Receiver<Command>,
    mut relay_rx: mpsc::Receiver<RelayIn>,
    events: Arc<tokio::sync::broadcast::Sender<SfuEvent>>,
) {
    let mut sinks = RelaySinks::default();
    let local = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    size_buffers(&socket);
    // quinn-udp turns on UDP GRO and IP_PKTINFO: one receive may carry several datagrams of
    // one sender (split by `stride`), and tells which local IP each arrived on.
    let state = match quinn_udp::UdpSocketState::new((&socket).into()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot set up the media socket");
            return;
        }
    };
    let slots = quinn_udp::BATCH_SIZE.clamp(1, RECV_SLOTS);
    let mut bufs: Vec<Vec<u8>> = (0..slots).map(|_| vec![0u8; RECV_SLOT_BYTES]).collect();
    let mut metas = vec![quinn_udp::RecvMeta::default(); slots];
    let mut batch = Batch::new();
    sfu.handle_input(Input::Timeout(now()));
    let sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(sleep);
    loop {
        let deadline = flush(
            &socket, &state, &mut batch, &mut tcp, &mut sinks, &mut sfu, &events,
        )
        .await;
        let wait = tokio::time::Instant::from_std(deadline)
            .max(tokio::time::Instant::now() + Duration::from_millis(1));
        sleep.as_mut().reset(wait);
        tokio::select! {
            ready = socket.readable() => {
                if ready.is_err() {
                    continue;
                }
                // Drain what is queued, a bounded number of rounds, then flush.
                for _ in 0..RECV_ROUNDS {
                    let mut iovs: Vec<std::io::IoSliceMut<'_>> = bufs.iter_mut().map(|b| std::io::IoSliceMut::new(b)).collect();
                    let received = socket.try_io(tokio::io::Interest::READABLE, || state.recv((&socket).into(), &mut iovs, &mut metas));
                    let n = match received {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        // ICMP errors surface here on Linux (port unreachable from a gone peer).
                        Err(e) => {
                            tracing::debug!(error = %e, "udp receive error");
                            break;
                        }
                    };
                    let at = now();
                    for (meta, buf) in metas.iter().zip(&bufs).take(n) {
                        let to = meta.dst_ip.map_or(local, |ip| SocketAddr::new(ip, local.port()));
                        let stride = meta.stride.max(1);
                        for data in buf[..meta.len.min(buf.len())].chunks(stride) {
                            sfu.handle_input(Input::Datagram { at, from: meta.addr, to, data });
                        }
                    }
                }
            },
            cmd = rx.recv() => match cmd {
                Some(Command::Shutdown { reply }) => {
                    sfu.close_all();
                    flush(&socket, &state, &mut batch, &mut tcp, &mut sinks, &mut sfu, &events).await;
                    let _ = reply.send(());
                    return;
                }
                Some(Command::Relay(cmd)) => {
                    sfu.handle_input(Input::Timeout(now()));
                    crate::relay_io::handle(&mut sfu, &mut sinks, cmd);
                }
                Some(cmd) => handle_command(&mut sfu, cmd),
                None => {
                    sfu.close_all();
                    flush(&socket, &state, &mut batch, &mut tcp, &mut sinks, &mut sfu, &events).await;
                    return;
                }
            },
            Some(packet) = relay_rx.recv() => {
                sfu.relay_ingest(now(), &packet.stream, packet.track, &packet.data);
                // Take what else is queued, bounded, before flushing.
                for _ in 0..256 {
                    let Ok(p) = relay_rx.try_recv() else { break };
                    sfu.relay_ingest(now(), &p.stream, p.track, &p.data);
                }
            },
            Some(event) = tcp_event(&mut tcp) => {
                if let Some(side) = tcp.as_mut() {
                    let opens = |from, frame: &[u8]| sfu.opens_tcp(from, frame);
                    if let Some((from, to, data)) = side.on_event(event, opens) {
                        sfu.handle_input(Input::Framed { at: now(), from, to, data: &data });
                    }
                }
            },
            () = &mut sleep => sfu.handle_input(Input::Timeout(now())),
        }
    }
}

/// Datagrams of one destination and size, sent with one `sendmsg` (UDP GSO, Linux >= 4.18)
/// where the kernel supports it. A subscriber's packets for one frame come out of the core back
/// to back with equal sizes (the last may be shorter), which is what GSO can batch.
struct Batch {
    buf: Vec<u8>,
    to: Option<SocketAddr>,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the batch: nothing more may follow it.
    closed: bool,
}

/// At most this many bytes in one GSO send (the kernel limit is 64 KiB).
const GSO_MAX_BYTES: usize = 60_000;

impl Batch {
    fn new() -> Self {
        Self {
            buf: Vec::with_capacity(GSO_MAX_BYTES),
            to: None,
            segment: 0,
            count: 0,
            closed: false,
        }
    }

    fn fits(&self, to: SocketAddr, len: usize, max_segments: usize) -> bool {
        self.to == Some(to)
            && !self.closed
            && len <= self.segment
            && self.count < max_segments
            && self.buf.len() + len <= GSO_MAX_BYTES
    }

    fn push(&mut self, to: SocketAddr, data: &[u8]) {
        if self.count == 0 {
            self.to = Some(to);
            self.segment = data.len();
        } else if data.len() < self.segment {
            self.closed = true;
        }
        self.buf.extend_from_slice(data);
        self.count += 1;
    }

    async fn send(&mut self, socket: &UdpSocket, state: &quinn_udp::UdpSocketState) {
        let Some(to) = self.to.take() else { return };
        let transmit = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents: &self.buf,
            segment_size: (self.count > 1).then_some(self.segment),
            src_ip: None,
        };
        // Bounded: a socket that stays full for 8 waits loses this batch (UDP may drop).
        for _ in 0..8 {
            match socket.try_io(tokio::io::Interest::WRITABLE, || {
                state.try_send(socket.into(), &transmit)
            }) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if socket.writable().await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, %to, "udp send failed");
                    break;
                }
            }
        }
        self.buf.clear();
        self.count = 0;
        self.closed = false;
    }
}

/// The next ICE-TCP event, or never when ICE-TCP is off.
async fn tcp_event(tcp: &mut Option<TcpSide>) -> Option<TcpEvent> {
    match tcp {
        Some(side) => side.events.recv().await,
        None => std::future::pending().await,
    }
}

async fn flush(
    socket: &UdpSocket,
    state: &quinn_udp::UdpSocketState,
    batch: &mut Batch,
    tcp: &mut Option<TcpSide>,
    sinks: &mut RelaySinks,
    sfu: &mut Sfu,
    events: &tokio::sync::broadcast::Sender<SfuEvent>,
) -> std::time::Instant {
    let max_segments = state.max_gso_segments().max(1);
    loop {
        match sfu.poll_output() {
            Output::Transmit(t) if t.tcp => {
                if let Some(side) = tcp.as_mut() {
                    side.send(t.to, &t.data);
                }
            }
            Output::Transmit(t) => {
                if !batch.fits(t.to, t.data.len(), max_segments) {
                    batch.send(socket, state).await;
                }
                batch.push(t.to, &t.data);
            }
            // A relay's stream notices go on that relay's own queue.
            Output::Event(SfuEvent::RelayTracks(relay, tracks)) => {
                sinks.notice(relay, RelayNotice::Tracks(tracks));
            }
            Output::Event(SfuEvent::RelayOffline(relay, stream)) => {
                sinks.notice(relay, RelayNotice::Offline(stream));
            }
            Output::Event(e) => {
                let _ = events.send(e);
            }
            Output::Relay(p) => sinks.send(p),
            Output::Timeout(t) => {
                batch.send(socket, state).await;
                return t;
            }
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
            options,
            reply,
        } => {
            let _ = reply.send(sfu.subscribe_with(at, stream, &offer, options));
        }
        Command::SetLayer { peer, pin, reply } => {
            let _ = reply.send(sfu.set_layer(peer, pin));
        }
        Command::RestartIce {
            peer,
            ufrag,
            pwd,
            candidates,
            reply,
        } => {
            let _ = reply.send(sfu.restart_ice(peer, &ufrag, &pwd, &candidates));
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
        // Handled in the run loop, which owns the relay sinks.
        Command::Relay(_) => {}
    }
}
