//! The driver's run loop: receive (GRO, recvmmsg), feed the core, flush its output (GSO
//! batches, ICE-TCP frames, relay queues, the event broadcast), sleep until its deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::batch::Batch;
use super::relay_io::{self, RelayIn, RelayNotice, RelaySinks};
use super::tcp::{TcpEvent, TcpSide};
use super::{now, Command};
use crate::{Input, Output, Sfu, SfuEvent};

/// Receive buffers: each holds one datagram or one GRO train of datagrams (64 KiB at most).
const RECV_SLOT_BYTES: usize = 64 * 1024;
/// Buffers filled per `recvmmsg`.
const RECV_SLOTS: usize = 8;
/// `recvmmsg` rounds before the core's output is flushed.
const RECV_ROUNDS: usize = 8;

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

pub(super) async fn run(
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
                    relay_io::handle(&mut sfu, &mut sinks, cmd);
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
        Command::Bind {
            peer,
            stream,
            sections,
            reply,
        } => {
            let _ = reply.send(sfu.bind(peer, &stream, sections));
        }
        Command::SetMuted { stream, muted } => sfu.set_muted(&stream, muted),
        Command::Rebind {
            peer,
            from,
            to,
            sections,
            reply,
        } => {
            let _ = reply.send(sfu.rebind(peer, from.as_ref(), &to, sections));
        }
        Command::Unbind {
            peer,
            stream,
            reply,
        } => {
            let _ = reply.send(sfu.unbind(peer, &stream));
        }
        Command::Shown { peer, reply } => {
            let _ = reply.send(sfu.shown(peer));
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
