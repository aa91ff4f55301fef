//! `publish`: WHIP publisher sending a pre-encoded clip (tests/peers/make_clip.py) at real-time
//! pace through `TrackLocalStaticSample`, looping it until --duration.
//!
//! PLI/FIR cannot be answered: the media is pre-encoded, there is no encoder to ask for a
//! keyframe. They are counted; the clip has a keyframe every 30 frames (1 s at 30 fps), which
//! bounds how long a viewer that asked waits.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::watch;
use webrtc::media::io::ivf_reader::IVFReader;
use webrtc::media::Sample;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use webrtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::track::track_local::track_local_static_sample::TrackLocalStaticSample;
use webrtc::track::track_local::TrackLocal;

use crate::media::{h264_is_key, read_annexb_access_units, read_length_prefixed, vp8_is_key};
use crate::rtc::{self, Codecs};

pub struct PublishArgs {
    pub url: String,
    pub token: String,
    pub duration: Duration,
    pub h264: bool,
    pub audio: bool,
    pub clip: String,
    pub connect_timeout: Duration,
}

const FRAME_INTERVAL: Duration = Duration::from_nanos(1_000_000_000 / 30);
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);

/// Counters shared by the sending and RTCP tasks.
#[derive(Default)]
struct Counters {
    frames_sent: AtomicU64,
    keyframes_sent: AtomicU64,
    video_loops: AtomicU64,
    audio_frames_sent: AtomicU64,
    pli_received: AtomicU64,
    fir_received: AtomicU64,
    nack_received: AtomicU64,
    remb_received: AtomicU64,
}

/// The clip, all in memory (a few hundred KB).
struct Clip {
    video: Vec<Bytes>,
    audio: Vec<Bytes>,
}

fn load_clip(dir: &Path, h264: bool, with_audio: bool) -> Result<Clip> {
    let video = if h264 {
        let path = dir.join("video.h264");
        read_annexb_access_units(
            &std::fs::read(&path).with_context(|| format!("{}", path.display()))?,
        )
    } else {
        let path = dir.join("video.ivf");
        let file = std::fs::File::open(&path).with_context(|| format!("{}", path.display()))?;
        let (mut reader, header) = IVFReader::new(std::io::BufReader::new(file))?;
        if &header.four_cc != b"VP80" {
            bail!("{}: fourcc {:?}, not VP80", path.display(), header.four_cc);
        }
        let mut frames = Vec::new();
        while let Ok((frame, _)) = reader.parse_next_frame() {
            frames.push(frame.freeze());
        }
        frames
    };
    let audio = if with_audio {
        let path = dir.join("audio.opus.lp");
        read_length_prefixed(&std::fs::read(&path).with_context(|| format!("{}", path.display()))?)
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    } else {
        Vec::new()
    };
    let is_key = if h264 { h264_is_key } else { vp8_is_key };
    if video.is_empty() || !is_key(&video[0]) {
        bail!(
            "{}: no video, or the first frame is not a keyframe",
            dir.display()
        );
    }
    if with_audio && audio.is_empty() {
        bail!("{}: no Opus packets in audio.opus.lp", dir.display());
    }
    Ok(Clip { video, audio })
}

/// Sends `frames` in a loop, one every `interval` from `start` (absolute deadlines, so the
/// pace does not drift), until `stop` changes. Returns how often the clip wrapped.
async fn send_loop(
    track: Arc<TrackLocalStaticSample>,
    frames: Arc<Vec<Bytes>>,
    interval: Duration,
    start: tokio::time::Instant,
    mut stop: watch::Receiver<bool>,
    mut on_sent: impl FnMut(&Bytes) + Send,
) -> Result<u64> {
    let mut n: u64 = 0;
    loop {
        let at = start + interval * n as u32;
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = stop.changed() => break,
        }
        let data = &frames[(n % frames.len() as u64) as usize];
        track
            .write_sample(&Sample {
                data: data.clone(),
                duration: interval,
                ..Default::default()
            })
            .await?;
        on_sent(data);
        n += 1;
    }
    Ok(n / frames.len() as u64)
}

/// Reads RTCP for one sender (the interceptors only run while someone reads) and counts the
/// feedback the server sends.
async fn rtcp_loop(
    sender: Arc<RTCRtpSender>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let pkts = tokio::select! {
            r = sender.read_rtcp() => match r { Ok((pkts, _)) => pkts, Err(_) => return },
            _ = stop.changed() => return,
        };
        for p in pkts {
            let any = p.as_any();
            if any.is::<PictureLossIndication>() {
                // Cannot re-encode pre-encoded media: the next keyframe of the clip (at most
                // 30 frames away) is what the viewer gets.
                counters.pli_received.fetch_add(1, Ordering::Relaxed);
            } else if any.is::<FullIntraRequest>() {
                counters.fir_received.fetch_add(1, Ordering::Relaxed);
            } else if any.is::<TransportLayerNack>() {
                counters.nack_received.fetch_add(1, Ordering::Relaxed);
            } else if any.is::<ReceiverEstimatedMaximumBitrate>() {
                counters.remb_received.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn add_send_track(
    pc: &webrtc::peer_connection::RTCPeerConnection,
    track: Arc<TrackLocalStaticSample>,
) -> Result<Arc<RTCRtpSender>> {
    let t = pc
        .add_transceiver_from_track(
            track as Arc<dyn TrackLocal + Send + Sync>,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                send_encodings: vec![],
            }),
        )
        .await?;
    Ok(t.sender().await)
}

pub async fn run(a: PublishArgs) -> (serde_json::Value, bool) {
    let counters = Arc::new(Counters::default());
    let t0: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut result = json!({"role": "publisher", "ok": false, "codec": if a.h264 {"h264"} else {"vp8"},
                            "audio": a.audio, "implementation": "webrtc-rs 0.17.2"});
    let outcome = publish(&a, &counters, &t0, &mut result).await;
    let c = &counters;
    let r = result.as_object_mut().expect("object");
    r.insert(
        "frames_sent".into(),
        c.frames_sent.load(Ordering::Relaxed).into(),
    );
    r.insert(
        "keyframes_sent".into(),
        c.keyframes_sent.load(Ordering::Relaxed).into(),
    );
    r.insert(
        "clip_loops".into(),
        c.video_loops.load(Ordering::Relaxed).into(),
    );
    r.insert(
        "audio_frames_sent".into(),
        c.audio_frames_sent.load(Ordering::Relaxed).into(),
    );
    r.insert(
        "pli_received".into(),
        c.pli_received.load(Ordering::Relaxed).into(),
    );
    r.insert(
        "fir_received".into(),
        c.fir_received.load(Ordering::Relaxed).into(),
    );
    r.insert(
        "nack_received".into(),
        c.nack_received.load(Ordering::Relaxed).into(),
    );
    r.insert(
        "remb_received".into(),
        c.remb_received.load(Ordering::Relaxed).into(),
    );
    if let Some(t) = *t0.lock().unwrap() {
        r.insert(
            "duration_s".into(),
            ((t.elapsed().as_secs_f64() * 100.0).round() / 100.0).into(),
        );
    }
    let ok = match outcome {
        Ok(()) => true,
        Err(e) => {
            log::error!("publish failed: {e:#}");
            r.insert("error".into(), format!("{e:#}").into());
            false
        }
    };
    r.insert("ok".into(), ok.into());
    (result, ok)
}

async fn publish(
    a: &PublishArgs,
    counters: &Arc<Counters>,
    t0: &Arc<Mutex<Option<Instant>>>,
    result: &mut serde_json::Value,
) -> Result<()> {
    let clip = load_clip(Path::new(&a.clip), a.h264, a.audio)?;
    log::info!(
        "clip: {} video frames, {} Opus packets",
        clip.video.len(),
        clip.audio.len()
    );
    let pc = rtc::new_peer_connection(&Codecs::Publish { h264: a.h264 }).await?;
    let video_cap = if a.h264 {
        rtc::h264_capability(rtc::H264_42E01F)
    } else {
        rtc::vp8_capability()
    };
    let video = Arc::new(TrackLocalStaticSample::new(
        video_cap,
        "video".into(),
        "webrtc-peer".into(),
    ));
    let mut senders = vec![add_send_track(&pc, video.clone()).await?];
    let audio = if a.audio {
        let t = Arc::new(TrackLocalStaticSample::new(
            rtc::opus_capability(),
            "audio".into(),
            "webrtc-peer".into(),
        ));
        senders.push(add_send_track(&pc, t.clone()).await?);
        Some(t)
    } else {
        None
    };
    let states = rtc::track_states(&pc, t0.clone(), || rtc::emit(&json!({"event": "live"})));

    let outcome = async {
        let token = (!a.token.is_empty()).then_some(a.token.as_str());
        let s = rtc::signal(&pc, &a.url, token, t0, Duration::ZERO).await?;
        result["location"] = s.location.clone().into();
        Ok::<_, anyhow::Error>(s.location)
    }
    .await;
    let location = match outcome {
        Ok(l) => l,
        Err(e) => {
            let _ = pc.close().await;
            return Err(e);
        }
    };
    let t_post = t0.lock().unwrap().expect("set by signal");
    let streamed = stream(
        a, &pc, &states, clip, video, audio, senders, counters, t_post,
    )
    .await;
    {
        let g = states.lock().unwrap();
        result["connected_ms"] = g.connected_ms.into();
        result["states"] = g
            .log
            .iter()
            .map(|(t, s)| json!([t, s]))
            .collect::<Vec<_>>()
            .into();
    }
    let token = (!a.token.is_empty()).then_some(a.token.as_str());
    result["delete_status"] = rtc::delete(&location, token).await.into();
    let _ = pc.close().await;
    streamed
}

#[allow(clippy::too_many_arguments)]
async fn stream(
    a: &PublishArgs,
    pc: &webrtc::peer_connection::RTCPeerConnection,
    states: &rtc::SharedStates,
    clip: Clip,
    video: Arc<TrackLocalStaticSample>,
    audio: Option<Arc<TrackLocalStaticSample>>,
    senders: Vec<Arc<RTCRtpSender>>,
    counters: &Arc<Counters>,
    t_post: Instant,
) -> Result<()> {
    if !rtc::wait_connected(states, a.connect_timeout).await {
        bail!(
            "not connected after {:?} (states {:?}, ICE {})",
            a.connect_timeout,
            states.lock().unwrap().log,
            pc.ice_connection_state()
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for s in senders {
        tokio::spawn(rtcp_loop(s, counters.clone(), stop_rx.clone()));
    }
    let start = tokio::time::Instant::now();
    let is_key = if a.h264 { h264_is_key } else { vp8_is_key };
    let c = counters.clone();
    tasks.push(tokio::spawn(send_loop(
        video,
        Arc::new(clip.video),
        FRAME_INTERVAL,
        start,
        stop_rx.clone(),
        move |f| {
            c.frames_sent.fetch_add(1, Ordering::Relaxed);
            if is_key(f) {
                c.keyframes_sent.fetch_add(1, Ordering::Relaxed);
            }
        },
    )));
    if let Some(track) = audio {
        let c = counters.clone();
        tasks.push(tokio::spawn(send_loop(
            track,
            Arc::new(clip.audio),
            AUDIO_INTERVAL,
            start,
            stop_rx.clone(),
            move |_| {
                c.audio_frames_sent.fetch_add(1, Ordering::Relaxed);
            },
        )));
    }
    // until --duration after the POST, or until the connection fails
    let end = t_post + a.duration;
    while Instant::now() < end && !states.lock().unwrap().failed && !rtc::stop_requested() {
        tokio::time::sleep(
            Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    let _ = stop_tx.send(true);
    let mut first_error = None;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await {
            Ok(Ok(loops)) if i == 0 => counters.video_loops.store(loops, Ordering::Relaxed),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(e.into())),
        }
    }
    if let Some(e) = first_error {
        return Err(e.context("write_sample"));
    }
    if states.lock().unwrap().failed {
        bail!("connection ended early: {:?}", states.lock().unwrap().log);
    }
    Ok(())
}
