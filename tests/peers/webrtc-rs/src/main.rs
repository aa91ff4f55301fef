//! webrtc-peer: an independent WHIP publisher / WHEP viewer on the `webrtc` crate (webrtc-rs
//! 0.17.2, the newest release with the classic `RTCPeerConnection` API; 0.20+ is a sans-I/O
//! rewrite). It exists to test the server against a third WebRTC stack whose SDP differs
//! from aiortc's and Chromium's (payload types, header-extension ids, feedback).
//!
//! ```text
//! webrtc-peer publish --url WHIP_URL --token KEY --duration SECS [--codec vp8|h264] [--no-audio] --clip DIR
//! webrtc-peer view --url WHEP_URL --duration SECS [--min-video-frames N] [--expect-audio yes|no|auto]
//!                  --dump-dir DIR [--decoder-python PY] [--decoder-script PATH]
//! ```
//!
//! * publish: sends the pre-encoded clip made by tests/peers/make_clip.py (DIR/video.ivf VP8 or
//!   DIR/video.h264 Annex B, DIR/audio.opus.lp) in a loop at real-time pace through
//!   `TrackLocalStaticSample`. Prints `{"event":"live"}` when the peer connection is Connected,
//!   then, after --duration from the POST and a DELETE, one result line. PLI/FIR are counted but
//!   cannot be answered (pre-encoded media); the clip has a keyframe every 30 frames.
//! * view: recvonly video + audio; depacketizes with the crate's `SampleBuilder` into DIR, from
//!   the first complete keyframe on, then runs tests/peers/decode_dump.py on DIR. The result
//!   line carries decoded frame counts; `first_frame_ms` is from just before the POST to the
//!   first complete keyframe received (first decodable frame; decoding happens afterwards).
//!
//! ICE: loopback UDP/IPv4 candidates only, no STUN server (the server is ICE-lite on
//! 127.0.0.1). stdout has only JSON lines, logs go to stderr (`-v`, `-vv`, or RUST_LOG). Exit
//! code 0 iff the result's `ok` is true. Hard time limit: duration + 60 s.

mod media;
mod publish;
mod rtc;
mod view;

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

#[derive(Parser)]
#[command(name = "webrtc-peer", about = "WHIP/WHEP test peer on webrtc-rs")]
struct Cli {
    /// -v: info logs, -vv: debug (offer and answer SDP)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Codec {
    Vp8,
    H264,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExpectAudio {
    Yes,
    No,
    Auto,
}

#[derive(Subcommand)]
enum Cmd {
    /// WHIP publisher of a pre-encoded clip
    Publish {
        #[arg(long)]
        url: String,
        /// stream key, sent as Bearer token
        #[arg(long, default_value = "")]
        token: String,
        /// seconds, from the POST
        #[arg(long)]
        duration: f64,
        #[arg(long, value_enum, default_value = "vp8")]
        codec: Codec,
        #[arg(long)]
        no_audio: bool,
        /// directory made by tests/peers/make_clip.py
        #[arg(long)]
        clip: String,
        #[arg(long, default_value_t = 10.0)]
        connect_timeout: f64,
    },
    /// WHEP viewer that dumps and then decodes what it received
    View {
        #[arg(long)]
        url: String,
        /// seconds, from the POST
        #[arg(long)]
        duration: f64,
        #[arg(long, default_value_t = 1)]
        min_video_frames: u64,
        #[arg(long, value_enum, default_value = "auto")]
        expect_audio: ExpectAudio,
        #[arg(long)]
        dump_dir: String,
        #[arg(long, default_value = "/work/main/.venv/bin/python")]
        decoder_python: String,
        /// default: decode_dump.py next to this package (tests/peers/)
        #[arg(long)]
        decoder_script: Option<String>,
        /// retry a WHEP 404 {"code":"offline"} every 500 ms for up to this many seconds
        #[arg(long, default_value_t = 0.0)]
        offline_retry: f64,
        #[arg(long, default_value_t = 10.0)]
        connect_timeout: f64,
    },
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Ends the process with an error line if it is still running after `limit`, whatever the
/// async side is doing.
fn watchdog(limit: Duration, role: &'static str) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        rtc::emit(
            &json!({"role": role, "ok": false, "error": format!("hard time limit of {limit:?} reached")}),
        );
        std::process::exit(1);
    });
}

fn main() {
    let cli = Cli::parse();
    let filter = match cli.verbose {
        0 => "webrtc_peer=warn,error",
        1 => "webrtc_peer=info,warn",
        _ => "webrtc_peer=debug,info",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter))
        .target(env_logger::Target::Stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (result, ok) = match cli.cmd {
        Cmd::Publish {
            url,
            token,
            duration,
            codec,
            no_audio,
            clip,
            connect_timeout,
        } => {
            watchdog(secs(duration + 60.0), "publisher");
            rt.block_on(async { rtc::watch_signals() });
            rt.block_on(publish::run(publish::PublishArgs {
                url,
                token,
                duration: secs(duration),
                h264: matches!(codec, Codec::H264),
                audio: !no_audio,
                clip,
                connect_timeout: secs(connect_timeout),
            }))
        }
        Cmd::View {
            url,
            duration,
            min_video_frames,
            expect_audio,
            dump_dir,
            decoder_python,
            decoder_script,
            offline_retry,
            connect_timeout,
        } => {
            watchdog(secs(duration + 60.0), "viewer");
            rt.block_on(async { rtc::watch_signals() });
            rt.block_on(view::run(view::ViewArgs {
                url,
                duration: secs(duration),
                min_video_frames,
                expect_audio: match expect_audio {
                    ExpectAudio::Yes => "yes",
                    ExpectAudio::No => "no",
                    ExpectAudio::Auto => "auto",
                }
                .into(),
                dump_dir: dump_dir.into(),
                decoder_python,
                decoder_script: decoder_script.unwrap_or_else(view::default_decoder_script),
                offline_retry: secs(offline_retry),
                connect_timeout: secs(connect_timeout),
            }))
        }
    };
    rtc::emit(&result);
    // background tasks of the crate may still be winding down: do not wait for them
    rt.shutdown_timeout(Duration::from_secs(2));
    std::process::exit(if ok { 0 } else { 1 });
}
