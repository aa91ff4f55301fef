//! The thin tokio driver: one UDP socket for every peer, a command channel for signaling.
//!
//! The driver owns the [`Sfu`] core. Each turn it drains the core's output (sending datagrams,
//! logging events), then waits for the first of: a datagram, a command, the core's deadline.
//! Time is read through `tokio::time::Instant`, so paused-time tests control it.

mod batch;
pub(crate) mod relay_io;
mod run;
mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use relay_io::{RelayCommand, RelayIn};
use tcp::TcpSide;

use crate::{
    IceRestarted, PeerId, Pin, Published, Sfu, SfuConfig, SfuError, SfuEvent, SfuStats, StreamId,
    SubscribeOptions, Subscribed,
};
/// Commands queued before callers wait (backpressure on the HTTP side).
const COMMAND_QUEUE: usize = 256;

pub(super) enum Command {
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
    Bind {
        peer: PeerId,
        stream: StreamId,
        sections: crate::Sections,
        reply: oneshot::Sender<Result<bool, SfuError>>,
    },
    Unbind {
        peer: PeerId,
        stream: StreamId,
        reply: oneshot::Sender<Result<bool, SfuError>>,
    },
    SetMuted {
        stream: StreamId,
        muted: bool,
    },
    Rebind {
        peer: PeerId,
        from: Option<StreamId>,
        to: StreamId,
        sections: crate::Sections,
        reply: oneshot::Sender<Result<bool, SfuError>>,
    },
    Shown {
        peer: PeerId,
        reply: oneshot::Sender<Result<Vec<crate::types::Shown>, SfuError>>,
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

    /// Show `stream` on a free section pair of a viewing session (see [`Sfu::bind`]).
    pub async fn bind(
        &self,
        peer: PeerId,
        stream: StreamId,
        sections: crate::Sections,
    ) -> Result<bool, SfuError> {
        self.call(|reply| Command::Bind {
            peer,
            stream,
            sections,
            reply,
        })
        .await?
    }

    /// Show `to` instead of `from` on a viewing session, or nothing changes (see
    /// [`Sfu::rebind`]).
    pub async fn rebind(
        &self,
        peer: PeerId,
        from: Option<StreamId>,
        to: StreamId,
        sections: crate::Sections,
    ) -> Result<bool, SfuError> {
        self.call(|reply| Command::Rebind {
            peer,
            from,
            to,
            sections,
            reply,
        })
        .await?
    }

    /// Mute or unmute a stream's audio everywhere (see [`Sfu::set_muted`]).
    pub async fn set_muted(&self, stream: StreamId, muted: bool) -> Result<(), SfuError> {
        self.tx
            .send(Command::SetMuted { stream, muted })
            .await
            .map_err(|_| SfuError::Unavailable)
    }

    /// Stop showing a stream on a viewing session (see [`Sfu::unbind`]).
    pub async fn unbind(&self, peer: PeerId, stream: StreamId) -> Result<bool, SfuError> {
        self.call(|reply| Command::Unbind {
            peer,
            stream,
            reply,
        })
        .await?
    }

    /// What a viewing session shows, on which of its sections (see [`Sfu::shown`]).
    pub async fn shown(&self, peer: PeerId) -> Result<Vec<crate::types::Shown>, SfuError> {
        self.call(|reply| Command::Shown { peer, reply }).await?
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
    let (relay_in, relay_rx) = mpsc::channel(relay_io::INGEST_QUEUE);
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
                let limits = tcp::TcpLimits {
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
                        run::run(socket, tcp, sfu, rx, relay_rx, thread_events).await;
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
