//! `view`: WHEP viewer. Recvonly video + audio transceivers; every received track goes through
//! the crate's `SampleBuilder` with its VP8 / H.264 / Opus depacketizer, and the frames are
//! dumped to DIR (video.ivf or video.h264, audio.opus.lp), starting at the first complete
//! keyframe. At the end tests/peers/decode_dump.py decodes the dump, so the counts in the
//! result line are decoded frames.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webrtc::media::io::sample_builder::SampleBuilder;
use webrtc::media::Sample;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::codecs::h264::H264Packet;
use webrtc::rtp::codecs::opus::OpusPacket;
use webrtc::rtp::codecs::vp8::Vp8Packet;
use webrtc::rtp::packetizer::Depacketizer;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::track::track_remote::TrackRemote;

use crate::media::{
    h264_is_decodable_start, h264_is_key, vp8_is_key, vp8_size, IvfWriter, LengthPrefixedWriter,
};
use crate::rtc::{self, Codecs};

pub struct ViewArgs {
    pub url: String,
    pub duration: Duration,
    pub min_video_frames: u64,
    pub expect_audio: String,
    pub dump_dir: PathBuf,
    pub decoder_python: String,
    pub decoder_script: String,
    pub offline_retry: Duration,
    pub connect_timeout: Duration,
}

/// What the track tasks measured (decoded counts come from decode_dump.py).
#[derive(Default)]
struct Received {
    codec: Option<&'static str>,
    first_frame_ms: Option<f64>,
    first_audio_ms: Option<f64>,
    video_packets: u64,
    audio_packets: u64,
    video_samples: u64,
    video_keyframes: u64,
    /// samples before the first complete keyframe (not dumped: a decoder cannot start there)
    video_samples_skipped: u64,
    /// packets the sample builder dropped (lost or unusable partitions)
    video_packets_dropped: u64,
    audio_samples: u64,
    pli_sent: u64,
    pli_sent_at_ms: Vec<f64>,
    errors: Vec<String>,
}

struct Shared {
    t0: Arc<Mutex<Option<Instant>>>,
    dir: PathBuf,
    received: Mutex<Received>,
    stop: watch::Receiver<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    pc: Mutex<Weak<RTCPeerConnection>>,
}

impl Shared {
    fn since_post(&self) -> f64 {
        self.t0.lock().unwrap().map(rtc::ms_since).unwrap_or(0.0)
    }
}

enum VideoDump {
    Ivf(Option<IvfWriter>),
    AnnexB(BufWriter<File>),
}

/// Reads one video track until stopped: sample builder -> dump, from the first keyframe a
/// decoder can start at; PLI 300 ms after the track starts and then every second until then.
async fn consume_video<D: Depacketizer>(
    sh: Arc<Shared>,
    track: Arc<TrackRemote>,
    depacketizer: D,
    h264: bool,
) -> Result<()> {
    let mut builder = SampleBuilder::new(512, depacketizer, 90000);
    let mut dump = if h264 {
        VideoDump::AnnexB(BufWriter::new(File::create(sh.dir.join("video.h264"))?))
    } else {
        VideoDump::Ivf(None)
    };
    let mut stop = sh.stop.clone();
    let mut pli = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_millis(300),
        Duration::from_secs(1),
    );
    let mut started = false;
    loop {
        let packet = tokio::select! {
            r = track.read_rtp() => match r { Ok((p, _)) => p, Err(_) => break },
            _ = stop.changed() => break,
            _ = pli.tick(), if !started => {
                send_pli(&sh, track.ssrc()).await;
                continue;
            }
        };
        sh.received.lock().unwrap().video_packets += 1;
        log::trace!(
            "video rtp seq {} ts {} marker {} len {} head {:02x?}",
            packet.header.sequence_number,
            packet.header.timestamp,
            packet.header.marker,
            packet.payload.len(),
            &packet.payload[..packet.payload.len().min(2)]
        );
        builder.push(packet);
        while let Some(sample) = builder.pop() {
            started = video_sample(&sh, &mut dump, &sample, h264, started)?;
        }
    }
    match dump {
        VideoDump::Ivf(Some(w)) => w.finish()?,
        VideoDump::Ivf(None) => {}
        VideoDump::AnnexB(mut w) => w.flush()?,
    }
    Ok(())
}

/// Handles one depacketized video frame; returns whether dumping has started.
fn video_sample(
    sh: &Shared,
    dump: &mut VideoDump,
    s: &Sample,
    h264: bool,
    started: bool,
) -> Result<bool> {
    let key = if h264 {
        h264_is_key(&s.data)
    } else {
        vp8_is_key(&s.data)
    };
    let mut r = sh.received.lock().unwrap();
    r.video_samples += 1;
    r.video_packets_dropped += u64::from(
        s.prev_dropped_packets
            .saturating_sub(s.prev_padding_packets),
    );
    if key {
        r.video_keyframes += 1;
    }
    let can_start = if h264 {
        h264_is_decodable_start(&s.data)
    } else {
        key
    };
    if !started && !can_start {
        r.video_samples_skipped += 1;
        return Ok(false);
    }
    if !started {
        r.first_frame_ms = Some(sh.since_post());
        log::info!(
            "first complete keyframe at {:.1} ms ({} bytes)",
            sh.since_post(),
            s.data.len()
        );
    }
    drop(r);
    match dump {
        VideoDump::AnnexB(w) => w.write_all(&s.data)?,
        VideoDump::Ivf(w) => {
            if w.is_none() {
                let (width, height) = vp8_size(&s.data);
                *w = Some(IvfWriter::create(&sh.dir.join("video.ivf"), width, height)?);
            }
            w.as_mut()
                .expect("created")
                .write(s.packet_timestamp, &s.data)?;
        }
    }
    Ok(true)
}

async fn send_pli(sh: &Shared, media_ssrc: u32) {
    let pc = sh.pc.lock().unwrap().upgrade();
    let Some(pc) = pc else { return };
    let pli = PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc,
    };
    if pc.write_rtcp(&[Box::new(pli)]).await.is_ok() {
        let t = sh.since_post();
        let mut r = sh.received.lock().unwrap();
        r.pli_sent += 1;
        r.pli_sent_at_ms.push(t);
        log::info!("PLI sent at {t:.1} ms (no keyframe yet)");
    }
}

async fn consume_audio(sh: Arc<Shared>, track: Arc<TrackRemote>) -> Result<()> {
    let mut builder = SampleBuilder::new(64, OpusPacket, 48000);
    let mut dump = LengthPrefixedWriter::create(&sh.dir.join("audio.opus.lp"))?;
    let mut stop = sh.stop.clone();
    loop {
        let packet = tokio::select! {
            r = track.read_rtp() => match r { Ok((p, _)) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        sh.received.lock().unwrap().audio_packets += 1;
        builder.push(packet);
        while let Some(s) = builder.pop() {
            {
                let mut r = sh.received.lock().unwrap();
                r.audio_samples += 1;
                if r.first_audio_ms.is_none() {
                    r.first_audio_ms = Some(sh.since_post());
                }
            }
            dump.write(s.packet_timestamp, &s.data)?;
        }
    }
    dump.finish()
}

fn on_track(sh: Arc<Shared>, track: Arc<TrackRemote>) {
    let mime = track.codec().capability.mime_type.to_ascii_lowercase();
    log::info!(
        "track {} {mime} pt {} ssrc {}",
        track.kind(),
        track.payload_type(),
        track.ssrc()
    );
    let task = match (track.kind(), mime.as_str()) {
        (RTPCodecType::Video, "video/vp8") => {
            sh.received.lock().unwrap().codec = Some("vp8");
            tokio::spawn(report(
                sh.clone(),
                consume_video(sh.clone(), track, Vp8Packet::default(), false),
            ))
        }
        (RTPCodecType::Video, "video/h264") => {
            sh.received.lock().unwrap().codec = Some("h264");
            // is_avc false (the default): NAL units come out with Annex B start codes
            tokio::spawn(report(
                sh.clone(),
                consume_video(sh.clone(), track, H264Packet::default(), true),
            ))
        }
        (RTPCodecType::Audio, "audio/opus") => {
            tokio::spawn(report(sh.clone(), consume_audio(sh.clone(), track)))
        }
        _ => {
            sh.received
                .lock()
                .unwrap()
                .errors
                .push(format!("unexpected track {mime}"));
            return;
        }
    };
    sh.tasks.lock().unwrap().push(task);
}

async fn report(sh: Arc<Shared>, f: impl std::future::Future<Output = Result<()>>) {
    if let Err(e) = f.await {
        log::error!("track: {e:#}");
        sh.received.lock().unwrap().errors.push(format!("{e:#}"));
    }
}

/// Runs decode_dump.py on the dump directory; returns its JSON line.
async fn decode(a: &ViewArgs) -> Result<Value> {
    let mut cmd = tokio::process::Command::new(&a.decoder_python);
    cmd.arg(&a.decoder_script)
        .arg(&a.dump_dir)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .map_err(|_| anyhow!("decoder took more than 30 s"))?
        .with_context(|| format!("running {} {}", a.decoder_python, a.decoder_script))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    if !out.status.success() || line.is_empty() {
        bail!(
            "decoder exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_str(line).with_context(|| format!("decoder printed {line:?}"))
}

pub async fn run(a: ViewArgs) -> (Value, bool) {
    let mut result = json!({"role": "viewer", "ok": false, "implementation": "webrtc-rs 0.17.2"});
    let ok = match view(&a, &mut result).await {
        Ok(()) => true,
        Err(e) => {
            log::error!("view failed: {e:#}");
            result["error"] = format!("{e:#}").into();
            false
        }
    };
    result["ok"] = ok.into();
    (result, ok)
}

async fn view(a: &ViewArgs, result: &mut Value) -> Result<()> {
    std::fs::create_dir_all(&a.dump_dir).with_context(|| format!("{}", a.dump_dir.display()))?;
    for f in ["video.ivf", "video.h264", "audio.opus.lp"] {
        let _ = std::fs::remove_file(a.dump_dir.join(f)); // a stale dump would be decoded too
    }
    let pc = rtc::new_peer_connection(&Codecs::View).await?;
    for kind in [RTPCodecType::Video, RTPCodecType::Audio] {
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            send_encodings: vec![],
        };
        pc.add_transceiver_from_kind(kind, Some(init)).await?;
    }
    let t0: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let sh = Arc::new(Shared {
        t0: t0.clone(),
        dir: a.dump_dir.clone(),
        received: Mutex::default(),
        stop: stop_rx,
        tasks: Mutex::default(),
        pc: Mutex::new(Arc::downgrade(&pc)),
    });
    let s2 = sh.clone();
    pc.on_track(Box::new(move |track, _, _| {
        on_track(s2.clone(), track);
        Box::pin(async {})
    }));
    let states = rtc::track_states(&pc, t0.clone(), || {});

    let signalled = rtc::signal(&pc, &a.url, None, &t0, a.offline_retry).await;
    let s = match signalled {
        Ok(s) => s,
        Err(e) => {
            let _ = pc.close().await;
            return Err(e);
        }
    };
    result["location"] = s.location.clone().into();
    let expect_audio = match a.expect_audio.as_str() {
        "yes" => true,
        "no" => false,
        _ => rtc::answer_has_audio(&s.answer),
    };
    result["expect_audio"] = expect_audio.into();
    let t_post = t0.lock().unwrap().expect("set by signal");
    let connected = rtc::wait_connected(&states, a.connect_timeout).await;
    if connected {
        let end = t_post + a.duration;
        while Instant::now() < end && !states.lock().unwrap().failed && !rtc::stop_requested() {
            tokio::time::sleep(
                Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())),
            )
            .await;
        }
    }
    let _ = stop_tx.send(true);
    // before our own close() below, which the state log shows as "closed" too
    let ended_early = states.lock().unwrap().failed;
    let tasks: Vec<_> = std::mem::take(&mut *sh.tasks.lock().unwrap());
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    result["delete_status"] = rtc::delete(&s.location, None).await.into();
    let _ = pc.close().await;
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
    let r = std::mem::take(&mut *sh.received.lock().unwrap());
    fill_received(result, &r);
    if !connected {
        bail!(
            "not connected after {:?} (states {:?}, ICE {})",
            a.connect_timeout,
            states.lock().unwrap().log,
            pc.ice_connection_state()
        );
    }
    if let Some(e) = r.errors.first() {
        bail!("{e}");
    }
    let d = decode(a).await?;
    for k in [
        "video_frames",
        "audio_frames",
        "width",
        "height",
        "video_errors",
        "audio_errors",
    ] {
        result[k] = d[k].clone();
    }
    let video_frames = d["video_frames"].as_u64().unwrap_or(0);
    let audio_frames = d["audio_frames"].as_u64().unwrap_or(0);
    if ended_early {
        bail!("connection ended early: {:?}", states.lock().unwrap().log);
    }
    if video_frames < a.min_video_frames {
        bail!(
            "{video_frames} decoded video frames, fewer than --min-video-frames {}",
            a.min_video_frames
        );
    }
    if expect_audio && audio_frames == 0 {
        bail!("no decoded audio frame (audio expected)");
    }
    Ok(())
}

fn fill_received(result: &mut Value, r: &Received) {
    result["codec"] = r.codec.into();
    result["first_frame_ms"] = r.first_frame_ms.into();
    result["first_audio_ms"] = r.first_audio_ms.into();
    result["packets"] = (r.video_packets + r.audio_packets).into();
    result["video_packets"] = r.video_packets.into();
    result["audio_packets"] = r.audio_packets.into();
    result["video_samples"] = r.video_samples.into();
    result["video_keyframes"] = r.video_keyframes.into();
    result["video_samples_skipped"] = r.video_samples_skipped.into();
    result["video_packets_dropped"] = r.video_packets_dropped.into();
    result["audio_samples"] = r.audio_samples.into();
    result["pli_sent"] = r.pli_sent.into();
    result["pli_sent_at_ms"] = r.pli_sent_at_ms.clone().into();
    // filled from the decoder; 0/null until it has run
    result["video_frames"] = 0.into();
    result["audio_frames"] = 0.into();
    result["width"] = Value::Null;
    result["height"] = Value::Null;
}

/// The decoder script next to this package (tests/peers/decode_dump.py).
pub fn default_decoder_script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../decode_dump.py")
        .display()
        .to_string()
}
