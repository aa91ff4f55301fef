//! What publisher and viewer share: the peer connection (codecs, loopback ICE), WHIP/WHEP
//! signalling over HTTP, connection-state tracking and the JSON output.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::APIBuilder;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType,
};
use webrtc::rtp_transceiver::RTCPFeedback;

static STOP: AtomicBool = AtomicBool::new(false);

/// SIGTERM or SIGINT arrived: the session ends now (DELETE, result line) instead of at
/// --duration. The interop matrix stops its publishers this way.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Watch for SIGTERM and SIGINT (call inside the runtime).
pub fn watch_signals() {
    tokio::spawn(async {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        STOP.store(true, Ordering::Relaxed);
    });
}

/// The video RTCP feedback the crate puts on every video codec of its defaults
/// (`MediaEngine::register_default_codecs`); the default interceptors add transport-cc.
fn video_feedback() -> Vec<RTCPFeedback> {
    [
        ("goog-remb", ""),
        ("ccm", "fir"),
        ("nack", ""),
        ("nack", "pli"),
    ]
    .into_iter()
    .map(|(typ, parameter)| RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    })
    .collect()
}

/// H.264 Constrained Baseline, packetization-mode 1: what the clip is and what we publish.
pub const H264_42E01F: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
const H264_42001F: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f";

pub fn vp8_capability() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_VP8.into(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: video_feedback(),
    }
}

pub fn h264_capability(fmtp: &str) -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_H264.into(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: fmtp.into(),
        rtcp_feedback: video_feedback(),
    }
}

pub fn opus_capability() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_OPUS.into(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        rtcp_feedback: vec![],
    }
}

/// Which codecs a peer connection offers. The payload type numbers are the crate's defaults
/// (`register_default_codecs`: VP8 96, H.264 42001f/pm1 102, 42e01f/pm1 125, Opus 111); only
/// the subset a role needs is registered, so an answer cannot pick a codec we cannot handle.
pub enum Codecs {
    /// publisher: the one video codec the clip has, plus Opus
    Publish { h264: bool },
    /// viewer: VP8, H.264 42e01f and 42001f (packetization-mode 1), Opus
    View,
}

fn media_engine(codecs: &Codecs) -> Result<MediaEngine> {
    let mut m = MediaEngine::default();
    let video: Vec<(RTCRtpCodecCapability, u8)> = match codecs {
        Codecs::Publish { h264: false } => vec![(vp8_capability(), 96)],
        Codecs::Publish { h264: true } => vec![(h264_capability(H264_42E01F), 125)],
        Codecs::View => vec![
            (vp8_capability(), 96),
            (h264_capability(H264_42E01F), 125),
            (h264_capability(H264_42001F), 102),
        ],
    };
    for (capability, payload_type) in video {
        m.register_codec(
            RTCRtpCodecParameters {
                capability,
                payload_type,
                ..Default::default()
            },
            RTPCodecType::Video,
        )?;
    }
    m.register_codec(
        RTCRtpCodecParameters {
            capability: opus_capability(),
            payload_type: 111,
            ..Default::default()
        },
        RTPCodecType::Audio,
    )?;
    Ok(m)
}

/// A peer connection with the crate's default interceptors (NACK generator/responder, sender
/// and receiver reports, transport-cc feedback), no STUN/TURN server, no mDNS, and ICE limited
/// to UDP over IPv4 loopback: the server under test is ICE-lite with a 127.0.0.1 candidate.
pub async fn new_peer_connection(codecs: &Codecs) -> Result<Arc<RTCPeerConnection>> {
    let mut m = media_engine(codecs)?;
    let registry = register_default_interceptors(Registry::new(), &mut m)?;
    let mut s = SettingEngine::default();
    s.set_include_loopback_candidate(true);
    s.set_ip_filter(Box::new(|ip| ip.is_loopback()));
    s.set_network_types(vec![NetworkType::Udp4]);
    // the crate's default (QueryOnly) opens a multicast socket on 5353: nothing to resolve here
    s.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    let api = APIBuilder::new()
        .with_media_engine(m)
        .with_interceptor_registry(registry)
        .with_setting_engine(s)
        .build();
    let pc = api
        .new_peer_connection(RTCConfiguration {
            ice_servers: vec![],
            ..Default::default()
        })
        .await?;
    Ok(Arc::new(pc))
}

/// Connection-state log shared with the state-change callback.
#[derive(Default)]
pub struct States {
    /// (ms since the POST, state)
    pub log: Vec<(f64, String)>,
    pub connected_ms: Option<f64>,
    pub failed: bool,
}

pub type SharedStates = Arc<Mutex<States>>;

/// Records every peer-connection state change relative to `t0` and calls `on_connected` once,
/// on the first `Connected`.
pub fn track_states(
    pc: &RTCPeerConnection,
    t0: Arc<Mutex<Option<Instant>>>,
    on_connected: impl Fn() + Send + Sync + 'static,
) -> SharedStates {
    let states: SharedStates = Arc::default();
    let st = states.clone();
    pc.on_peer_connection_state_change(Box::new(move |s: RTCPeerConnectionState| {
        let t = t0.lock().unwrap().map(ms_since).unwrap_or(0.0);
        log::info!("peer connection state {s} at {t:.1} ms");
        let mut g = st.lock().unwrap();
        g.log.push((t, s.to_string()));
        match s {
            RTCPeerConnectionState::Connected if g.connected_ms.is_none() => {
                g.connected_ms = Some(t);
                on_connected();
            }
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => g.failed = true,
            _ => {}
        }
        Box::pin(async {})
    }));
    states
}

/// Waits (bounded) until the state log says connected (true) or failed (false).
pub async fn wait_connected(states: &SharedStates, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        {
            let g = states.lock().unwrap();
            if g.connected_ms.is_some() {
                return true;
            }
            if g.failed {
                return false;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

pub fn ms_since(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e4).round() / 10.0
}

/// The result of the offer/answer exchange.
pub struct Signalled {
    /// absolute URL of the session resource (DELETE ends it)
    pub location: String,
    pub answer: String,
}

/// Creates the offer, waits for ICE gathering (WHIP/WHEP here use no trickle), POSTs it and
/// applies the answer. `t0` is set just before the POST that got the answer. A WHEP 404 with
/// `"code":"offline"` is retried every 500 ms for up to `offline_retry`. reqwest follows
/// 307/308 redirects with the same method and body; `Location` is resolved against the URL
/// that answered.
pub async fn signal(
    pc: &RTCPeerConnection,
    url: &str,
    token: Option<&str>,
    t0: &Mutex<Option<Instant>>,
    offline_retry: Duration,
) -> Result<Signalled> {
    let offer = pc.create_offer(None).await?;
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(offer).await?;
    tokio::time::timeout(Duration::from_secs(5), gathered.recv())
        .await
        .map_err(|_| anyhow!("ICE gathering did not complete in 5 s"))?;
    let offer = pc
        .local_description()
        .await
        .context("no local description")?
        .sdp;
    log::debug!("offer:\n{offer}");

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let deadline = Instant::now() + offline_retry;
    let resp = loop {
        let mut req = client
            .post(url)
            .header("Content-Type", "application/sdp")
            .body(offer.clone());
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        *t0.lock().unwrap() = Some(Instant::now());
        let resp = req.send().await.with_context(|| format!("POST {url}"))?;
        if resp.status() == 404 && Instant::now() < deadline {
            let body = resp.text().await.unwrap_or_default();
            if body.contains("\"offline\"") {
                log::info!("channel offline, retrying in 500 ms");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            bail!("POST {url} -> HTTP 404: {}", clip(&body));
        }
        break resp;
    };
    let status = resp.status();
    let answered_by = resp.url().clone();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.text().await.unwrap_or_default();
    if status != 201 {
        bail!("POST {url} -> HTTP {status}: {}", clip(&body));
    }
    let location = location.ok_or_else(|| anyhow!("201 without Location header"))?;
    let location = answered_by
        .join(&location)
        .with_context(|| format!("bad Location {location:?}"))?;
    log::debug!("answer:\n{body}");
    pc.set_remote_description(RTCSessionDescription::answer(body.clone())?)
        .await
        .context("setRemoteDescription of the answer")?;
    Ok(Signalled {
        location: location.to_string(),
        answer: body,
    })
}

/// DELETE of the session resource; returns the HTTP status, or None if the request failed.
pub async fn delete(location: &str, token: Option<&str>) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let mut req = client.delete(location);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    match req.send().await {
        Ok(r) => Some(r.status().as_u16()),
        Err(e) => {
            log::warn!("DELETE {location} failed: {e}");
            None
        }
    }
}

/// True if the answer has an active audio m-section (port != 0) that names a codec.
pub fn answer_has_audio(sdp: &str) -> bool {
    sdp.lines().any(|l| {
        let mut f = l
            .trim()
            .strip_prefix("m=audio ")
            .unwrap_or("")
            .split_whitespace();
        let port = f.next().unwrap_or("0");
        let formats = f.skip(1).count();
        port != "0" && formats > 0
    })
}

fn clip(s: &str) -> &str {
    &s[..s.char_indices().nth(300).map(|(i, _)| i).unwrap_or(s.len())]
}

/// Prints one JSON line on stdout (the only thing that goes there).
pub fn emit(v: &serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}
