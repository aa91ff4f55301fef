//! A bench peer: a str0m `Rtc` (sans-IO) over its own UDP socket on loopback, driven by a small
//! tokio loop. Publishers loop the AV1 + Opus clip (or synthetic VP8 frames), each frame carrying
//! a counter and send time; subscribers count datagrams and frames and measure delay and start time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::clip::{self, Clip};
use crate::payload;

/// What a publisher sends.
#[derive(Debug)]
pub enum Source {
    /// The AV1 + Opus clip, looped; a keyframe request restarts the loop at its keyframe.
    Clip(Clip),
    /// Synthetic VP8-tagged frames of `frame_bytes` (keyframes 3x) and Opus-sized filler, a
    /// keyframe every `keyint` frames and when asked.
    Synthetic { frame_bytes: usize, keyint: u32 },
}

/// How the publisher treats keyframes.
#[derive(Debug, Clone, Copy)]
pub struct KeyframePolicy {
    /// Send the loop's keyframe again each time the loop restarts (false: only the very first).
    pub repeat: bool,
    /// Ignore keyframe requests from the SFU.
    pub deaf: bool,
}

impl Source {
    /// Frames in one loop (one keyframe interval).
    pub fn loop_len(&self) -> usize {
        match self {
            Source::Clip(c) => c.video.len(),
            Source::Synthetic { keyint, .. } => (*keyint).max(1) as usize,
        }
    }

    /// Video frame at loop position `pos`, stamped: (bytes, keyframe, codec).
    fn video(&self, pos: usize, counter: u32, sent_us: u64) -> (Vec<u8>, bool, Codec) {
        match self {
            Source::Clip(c) => {
                let (data, key) = c.frame_with_stamp(pos, counter, sent_us);
                (data, key, Codec::Av1)
            }
            Source::Synthetic { frame_bytes, .. } => {
                let key = pos == 0;
                let size = if key { frame_bytes * 3 } else { *frame_bytes };
                (payload::frame(counter, sent_us, key, size), key, Codec::Vp8)
            }
        }
    }

    /// The `n`th 20 ms audio packet.
    fn audio(&self, n: usize) -> Vec<u8> {
        match self {
            Source::Clip(c) => c.audio[n % c.audio.len()].clone(),
            Source::Synthetic { .. } => vec![0xfc; 120],
        }
    }

    /// Payload sizes of one loop of video frames and of an audio packet, for the floor run.
    pub fn sizes(&self) -> (Vec<usize>, usize) {
        let video = (0..self.loop_len())
            .map(|i| self.video(i, 0, 0).0.len())
            .collect();
        (video, self.audio(0).len())
    }
}

/// What a peer does.
#[derive(Debug, Clone)]
pub enum Role {
    /// Sends `source` at `fps`, with 20 ms audio packets.
    Publisher {
        source: Arc<Source>,
        fps: u32,
        keyframes: KeyframePolicy,
    },
    /// Receives.
    Subscriber,
}

/// Live counters of one peer, read by the orchestrator while it runs.
#[derive(Default)]
pub struct PeerStats {
    /// ICE + DTLS completed.
    pub connected: AtomicBool,
    /// Datagrams and bytes received on the socket.
    pub datagrams_in: AtomicU64,
    pub bytes_in: AtomicU64,
    /// Video frames received (subscriber) or sent (publisher).
    pub frames: AtomicU64,
    /// Keyframe requests received (publisher).
    pub keyframe_requests: AtomicU64,
    /// Microseconds from the WHEP/WHIP POST to the first complete keyframe (subscriber).
    pub start_us: AtomicU64,
    /// Send-to-receive delay of each frame, microseconds, while `recording`.
    pub delays_us: Mutex<Vec<u64>>,
    /// Counters of the frames received while `recording`.
    pub counters: Mutex<Vec<u32>>,
    pub recording: AtomicBool,
    /// Frames that arrived with a counter lower than one already seen.
    pub reordered: AtomicU64,
}

/// Run one peer until `stop` is set. `epoch` is the shared clock origin for send stamps.
pub async fn run(
    role: Role,
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    epoch: Instant,
    stats: Arc<PeerStats>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let local = socket.local_addr()?;
    let now = Instant::now();
    let mut rtc = Rtc::builder().build(now.into_std());
    rtc.add_local_candidate(Candidate::host(local, "udp")?);
    let dir = match &role {
        Role::Publisher { .. } => Direction::SendOnly,
        Role::Subscriber => Direction::RecvOnly,
    };
    let mut api = rtc.sdp_api();
    let video = api.add_media(MediaKind::Video, dir, None, None, None);
    let audio = api.add_media(MediaKind::Audio, dir, None, None, None);
    let (offer, pending) = api.apply().context("creating the offer")?;

    let posted = Instant::now();
    let mut req = http
        .post(&url)
        .header("content-type", "application/sdp")
        .body(offer.to_sdp_string());
    if let Some(t) = &token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let body = resp.text().await?;
    if status.as_u16() != 201 {
        bail!("POST {url}: HTTP {status}: {body}");
    }
    let answer = SdpAnswer::from_sdp_string(&body).context("parsing the answer")?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .context("accepting the answer")?;

    let mut buf = vec![0u8; 2048];
    let mut deadline;
    let mut frame_no: u32 = 0;
    let mut loop_pos: usize = 0;
    let mut last_counter: Option<u32> = None;
    let (frame_every, audio_every) = match &role {
        Role::Publisher { fps, .. } => (
            Duration::from_secs(1) / (*fps).max(1),
            Duration::from_millis(20),
        ),
        Role::Subscriber => (Duration::from_secs(3600), Duration::from_secs(3600)),
    };
    let mut next_frame = Instant::now();
    let mut next_audio = Instant::now();
    let mut audio_ts: u64 = 0;

    while !stop.load(Ordering::Relaxed) {
        // Drain the engine.
        loop {
            match rtc.poll_output()? {
                Output::Timeout(t) => {
                    deadline = Instant::from_std(t);
                    break;
                }
                Output::Transmit(t) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(e) => match e {
                    Event::Connected => stats.connected.store(true, Ordering::Relaxed),
                    Event::KeyframeRequest(_) => {
                        if let Role::Publisher { keyframes, .. } = &role {
                            if !keyframes.deaf {
                                loop_pos = 0;
                            }
                        }
                        stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::MediaData(d) if d.mid == video => {
                        let stamp = if d.params.spec().codec == Codec::Av1 {
                            clip::parse_stamp(&d.data, d.is_keyframe())
                        } else {
                            payload::parse(&d.data)
                        };
                        on_frame(&stats, stamp, posted, epoch, &mut last_counter);
                    }
                    _ => {}
                },
            }
        }
        if !rtc.is_alive() {
            bail!("peer connection closed");
        }
        let connected = stats.connected.load(Ordering::Relaxed);
        let wake = if connected {
            deadline.min(next_frame).min(next_audio)
        } else {
            deadline
        };
        let wake = wake.max(Instant::now() + Duration::from_micros(200));
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, from) = r?;
                stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
                stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                if let Ok(recv) = Receive::new(Protocol::Udp, from, local, &buf[..n]) {
                    rtc.handle_input(Input::Receive(Instant::now().into_std(), recv))?;
                }
            }
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                rtc.handle_input(Input::Timeout(now.into_std()))?;
                if let (Role::Publisher { source, keyframes, .. }, true) = (&role, connected) {
                    if now >= next_frame {
                        let sent_us = (now - epoch).as_micros() as u64;
                        let (data, _key, codec) = source.video(loop_pos, frame_no, sent_us);
                        write(&mut rtc, video, codec, now, MediaTime::from_90khz(u64::from(frame_no) * 3000), data)?;
                        stats.frames.fetch_add(1, Ordering::Relaxed);
                        frame_no += 1;
                        loop_pos = (loop_pos + 1) % source.loop_len();
                        if loop_pos == 0 && !keyframes.repeat {
                            // Only the first pass starts with a keyframe; later passes skip it
                            // (the SFU forwards packets; nothing downstream decodes pixels).
                            loop_pos = 1 % source.loop_len();
                        }
                        next_frame += frame_every;
                    }
                    if now >= next_audio {
                        let time = MediaTime::new(audio_ts, Frequency::FORTY_EIGHT_KHZ);
                        write(&mut rtc, audio, Codec::Opus, now, time, source.audio((audio_ts / 960) as usize))?;
                        audio_ts += 960;
                        next_audio += audio_every;
                    }
                }
            }
        }
    }
    Ok(())
}

fn write(
    rtc: &mut Rtc,
    mid: Mid,
    codec: Codec,
    now: Instant,
    time: MediaTime,
    data: Vec<u8>,
) -> anyhow::Result<()> {
    let Some(writer) = rtc.writer(mid) else {
        return Ok(());
    };
    let Some(pt) = writer
        .payload_params()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt())
    else {
        bail!("no {codec} negotiated");
    };
    writer.write(pt, now.into_std(), time, data)?;
    Ok(())
}

fn on_frame(
    stats: &PeerStats,
    stamp: Option<payload::Stamp>,
    posted: Instant,
    epoch: Instant,
    last: &mut Option<u32>,
) {
    let Some(stamp) = stamp else {
        return;
    };
    let now = Instant::now();
    if stamp.keyframe && stats.start_us.load(Ordering::Relaxed) == 0 {
        stats
            .start_us
            .store((now - posted).as_micros().max(1) as u64, Ordering::Relaxed);
    }
    if last.is_some_and(|l| stamp.counter <= l) {
        stats.reordered.fetch_add(1, Ordering::Relaxed);
    }
    *last = Some(stamp.counter);
    stats.frames.fetch_add(1, Ordering::Relaxed);
    if stats.recording.load(Ordering::Relaxed) {
        let delay = ((now - epoch).as_micros() as u64).saturating_sub(stamp.sent_us);
        stats
            .delays_us
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(delay);
        stats
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(stamp.counter);
    }
}
