//! The upstream side of the relay: accept edges, check their handshake, serve their
//! subscriptions from the local SFU (origin, or an edge serving a tier below).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sfu::driver::SfuHandle;
use sfu::{RelayId, RelayPacket, SfuError, SfuEvent, StreamId};
use tokio::sync::mpsc;

use crate::proto::{self, Control, Role};
use crate::quic;
use crate::session::{tracks_message, ControlStream};

/// Track ids per subscription on one connection: the core's tracks (0..=4) are offset by a
/// block of this size per subscribed stream.
pub const TRACK_BLOCK: u16 = 8;
/// How long a new connection has to send a valid `hello`.
const HELLO_WITHIN: Duration = Duration::from_secs(5);

/// Settings of the upstream role.
#[derive(Clone)]
pub struct UpstreamConfig {
    /// This node's id (in `welcome`).
    pub node_id: String,
    /// The cluster secret.
    pub secret: Arc<[u8]>,
    /// At an edge serving a tier below: its own upstream, to pull a channel through on demand.
    pub pull: Option<crate::Upstream>,
}

/// Accept edges on `addr` until the endpoint is closed. Returns the bound address and the
/// endpoint (close it to stop).
pub fn listen(
    addr: SocketAddr,
    config: UpstreamConfig,
    sfu: SfuHandle,
) -> Result<(SocketAddr, quinn::Endpoint), quic::QuicError> {
    let endpoint = quic::server(addr)?;
    let bound = endpoint.local_addr().unwrap_or(addr);
    let accepting = endpoint.clone();
    tokio::spawn(async move {
        let ids = Arc::new(AtomicU64::new(1));
        while let Some(incoming) = accepting.accept().await {
            let (config, sfu, ids) = (config.clone(), sfu.clone(), ids.clone());
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else {
                    return;
                };
                let relay = RelayId(ids.fetch_add(1, Ordering::Relaxed));
                let peer = conn.remote_address();
                match serve(conn, relay, &config, &sfu).await {
                    Ok(()) => tracing::info!(%peer, "edge disconnected"),
                    Err(e) => tracing::info!(%peer, error = %e, "edge connection ended"),
                }
                let _ = sfu.relay_gone(relay).await;
            });
        }
    });
    Ok((bound, endpoint))
}

/// Why an edge connection ended.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error("{0}")]
    Proto(#[from] proto::ProtoError),
    #[error("connection: {0}")]
    Connection(String),
    #[error("handshake: {0}")]
    Handshake(&'static str),
    #[error("media engine unavailable")]
    Sfu,
}

async fn serve(
    conn: quinn::Connection,
    relay: RelayId,
    config: &UpstreamConfig,
    sfu: &SfuHandle,
) -> Result<(), ServeError> {
    let (send, recv) = tokio::time::timeout(HELLO_WITHIN, conn.accept_bi())
        .await
        .map_err(|_| ServeError::Handshake("no control stream"))?
        .map_err(|e| ServeError::Connection(e.to_string()))?;
    let mut control = ControlStream::new(send, recv);
    let hello = tokio::time::timeout(HELLO_WITHIN, control.read())
        .await
        .map_err(|_| ServeError::Handshake("no hello"))??;
    let exporter = quic::exporter(&conn).ok_or(ServeError::Handshake("no TLS exporter"))?;
    let Some(Control::Hello {
        version,
        node_id,
        region,
        auth,
        ..
    }) = hello
    else {
        control
            .error("protocol", "the first frame must be hello")
            .await;
        linger(&conn).await;
        return Err(ServeError::Handshake("first frame is not hello"));
    };
    if !proto::verify_auth(&config.secret, Role::Edge, &exporter, &node_id, &auth) {
        control.error("unauthorized", "wrong cluster secret").await;
        linger(&conn).await;
        return Err(ServeError::Handshake("wrong cluster secret"));
    }
    if version < 1 {
        control
            .error("version", "this upstream speaks version 1")
            .await;
        linger(&conn).await;
        return Err(ServeError::Handshake("version"));
    }
    let auth = proto::auth_tag(&config.secret, Role::Upstream, &exporter, &config.node_id);
    control
        .write(&Control::Welcome {
            version: proto::VERSION,
            node_id: config.node_id.clone(),
            auth,
        })
        .await
        .map_err(|e| ServeError::Connection(e.to_string()))?;
    tracing::info!(edge = %node_id, %region, peer = %conn.remote_address(), "edge connected");

    let (sink, mut packets) = mpsc::channel::<RelayPacket>(sfu::RELAY_QUEUE);
    sfu.relay_attach(relay, sink)
        .await
        .map_err(|_| ServeError::Sfu)?;
    let mut events = sfu.events();
    // Stream -> first track id of its block, and back.
    let mut blocks: HashMap<StreamId, u16> = HashMap::new();
    let mut next_block: u16 = 0;
    let datagrams = conn.clone();
    loop {
        tokio::select! {
            frame = control.read() => {
                let Some(msg) = frame? else {
                    return Ok(());
                };
                match msg {
                    Control::Subscribe { channel } => {
                        let Ok(stream) = StreamId::new(&channel) else {
                            control.write(&Control::NotFound { channel }).await.ok();
                            continue;
                        };
                        let base = *blocks.entry(stream.clone()).or_insert_with(|| {
                            let b = next_block;
                            next_block = next_block.wrapping_add(TRACK_BLOCK);
                            b
                        });
                        let mut result = sfu.relay_subscribe(relay, stream.clone()).await;
                        if let (Err(SfuError::Offline(_)), Some(pull)) = (&result, &config.pull) {
                            // A tier above us may have it: pull it through, then serve it.
                            if pull.ensure(&channel).await {
                                result = sfu.relay_subscribe(relay, stream.clone()).await;
                            }
                        }
                        match result {
                            Ok(tracks) => control.write(&tracks_message(&tracks, base)).await.ok(),
                            Err(SfuError::Offline(_)) => control.write(&Control::Offline { channel }).await.ok(),
                            Err(_) => return Err(ServeError::Sfu),
                        };
                    }
                    Control::Unsubscribe { channel } => {
                        if let Ok(stream) = StreamId::new(&channel) {
                            let _ = sfu.relay_unsubscribe(relay, stream).await;
                        }
                    }
                    Control::Keyframe { track } => {
                        if let Some((stream, core)) = lookup(&blocks, track) {
                            let _ = sfu.relay_keyframe(stream, core).await;
                        }
                    }
                    Control::Keepalive { t } => {
                        control.write(&Control::KeepaliveAck { t }).await.ok();
                    }
                    // `nack` is not answered yet (no upstream packet cache): see the docs.
                    _ => {}
                }
            }
            Some(p) = packets.recv() => {
                let Some(stream_base) = block_of(&blocks, &p) else { continue };
                let bytes = proto::encode_datagram(stream_base + p.track, &p.data);
                // Too large or the connection is closing: dropped, like a lost packet.
                let _ = datagrams.send_datagram(bytes.into());
            }
            event = events.recv() => match event {
                Ok(SfuEvent::RelayTracks(r, tracks)) if r == relay => {
                    if let Some(base) = blocks.get(&tracks.stream).copied() {
                        control.write(&tracks_message(&tracks, base)).await.ok();
                    }
                }
                Ok(SfuEvent::RelayOffline(r, stream)) if r == relay => {
                    control.write(&Control::Offline { channel: stream.to_string() }).await.ok();
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Err(ServeError::Sfu),
                _ => {}
            },
            reason = conn.closed() => return Err(ServeError::Connection(reason.to_string())),
        }
    }
}

/// Give an `error` frame time to arrive: wait (bounded) for the peer to close.
async fn linger(conn: &quinn::Connection) {
    let _ = tokio::time::timeout(Duration::from_millis(500), conn.closed()).await;
}

/// The first track id of the block of the stream a relay packet belongs to.
fn block_of(blocks: &HashMap<StreamId, u16>, p: &RelayPacket) -> Option<u16> {
    blocks.get(&p.stream).copied()
}

fn lookup(blocks: &HashMap<StreamId, u16>, track: u16) -> Option<(StreamId, u16)> {
    blocks.iter().find_map(|(s, base)| {
        (track >= *base && track < base + TRACK_BLOCK).then(|| (s.clone(), track - base))
    })
}
