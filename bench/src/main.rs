//! `bench`: the AeThex LIVE load generator.
//!
//! Starts (`--spawn`) or targets (`--url`) a node, publishes one 30 fps stream (an AV1 clip
//! encoded at start with rav1e plus Opus audio, or synthetic VP8 frames) over real WebRTC (ICE, DTLS, SRTP on loopback UDP) and attaches S subscribers, all str0m peers in
//! one event loop. After a warm-up it measures, over `--seconds`: the server's CPU per egress
//! packet (from /proc), egress packets received, frame loss, forwarding delay (send stamp to
//! reassembled frame), stream start per subscriber (WHEP POST to first complete keyframe),
//! server memory per subscriber, and its own CPU.

mod client;
mod clip;
mod floor;
mod payload;
mod plot;
mod procfs;
mod stats;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use client::{KeyframePolicy, PeerStats, Role, Source};
use serde_json::json;
use tokio::time::Instant;

/// Load generator for AeThex LIVE: real WebRTC publishers and subscribers on loopback.
#[derive(Parser, Debug, Clone)]
#[command(name = "bench", version, about, long_about)]
struct Args {
    /// Start `aethex serve` as a child process on loopback (needs --server-bin).
    #[arg(long)]
    spawn: bool,
    /// The server binary for --spawn (default: `aethex` next to this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Target an existing node instead (base URL, e.g. http://127.0.0.1:8080); needs --key.
    #[arg(long, conflicts_with = "spawn")]
    url: Option<String>,
    /// Stream key of --channel on the --url node.
    #[arg(long)]
    key: Option<String>,
    /// Channel to publish to and watch.
    #[arg(long, default_value = "bench")]
    channel: String,
    /// PID of the --url node, to read its CPU and memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Subscribers.
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
    /// Measurement window in seconds (after all subscribers play and a 2 s warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Video codec of the published stream: `av1` encodes a test-pattern clip with rav1e once
    /// at start (with Opus audio); `vp8` sends synthetic VP8-tagged frames (no encoder).
    #[arg(long, value_enum, default_value_t = CodecArg::Av1)]
    codec: CodecArg,
    /// Picture size of the AV1 clip, WIDTHxHEIGHT.
    #[arg(long, default_value = "640x360", value_parser = parse_size)]
    size: (usize, usize),
    /// Target video bitrate, kbit/s (the AV1 clip's rate control target; for vp8 the synthetic
    /// frame size, keyframes 3x a delta frame).
    #[arg(long, default_value_t = 2500)]
    kbps: u32,
    /// Frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Keyframe interval in frames (besides keyframes on request); the AV1 clip is this long.
    /// 0: a keyframe only at the start (the clip is then 60 frames, looped without its keyframe).
    #[arg(long, default_value_t = 60)]
    keyint: u32,
    /// The publisher ignores keyframe requests (as some encoders do): new viewers can then only
    /// start from the SFU's keyframe cache or the next scheduled keyframe.
    #[arg(long)]
    deaf_publisher: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Run several sizes, e.g. `--sweep 1,10,50,100,200` (overrides --subscribers), and write
    /// an SVG plot of CPU per egress packet and delay against subscribers to --plot.
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<usize>,
    /// Where --sweep writes its plot.
    #[arg(long, default_value = "bench-sweep.svg")]
    plot: PathBuf,
    /// Skip the floor run (SRTP seal + send of the same packets, measured after the main run).
    #[arg(long)]
    no_floor: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum CodecArg {
    Av1,
    Vp8,
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (w, h) = s
        .split_once('x')
        .ok_or_else(|| format!("expected WIDTHxHEIGHT, got {s:?}"))?;
    let w: usize = w.parse().map_err(|e| format!("width: {e}"))?;
    let h: usize = h.parse().map_err(|e| format!("height: {e}"))?;
    if !(16..=4096).contains(&w) || !(16..=4096).contains(&h) {
        return Err(format!("{w}x{h}: each side must be 16..=4096"));
    }
    Ok((w, h))
}

/// The publisher's media, made once for all runs.
fn make_source(args: &Args) -> anyhow::Result<Arc<Source>> {
    Ok(Arc::new(match args.codec {
        CodecArg::Vp8 => Source::Synthetic {
            frame_bytes: (args.kbps as usize * 1000 / 8 / args.fps.max(1) as usize).max(100),
            keyint: if args.keyint == 0 { 60 } else { args.keyint },
        },
        CodecArg::Av1 => {
            let spec = clip::ClipSpec {
                width: args.size.0,
                height: args.size.1,
                fps: args.fps,
                frames: if args.keyint == 0 { 60 } else { args.keyint },
                kbps: args.kbps,
            };
            let t = std::time::Instant::now();
            let c = clip::encode(spec)?;
            eprintln!(
                "bench: encoded a {}x{} AV1 clip, {} frames at {:.0} kbit/s, with Opus audio, in {:.1} s",
                spec.width,
                spec.height,
                c.video.len(),
                c.video_kbps(),
                t.elapsed().as_secs_f64()
            );
            Source::Clip(c)
        }
    }))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let source = make_source(&args)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if args.sweep.is_empty() {
        let report = rt.block_on(run(&args, &source))?;
        if args.json {
            println!("{report}");
        } else {
            print_table(&report);
        }
        return Ok(());
    }
    let mut reports = Vec::new();
    for &n in &args.sweep {
        let run_args = Args {
            subscribers: n,
            ..args.clone()
        };
        eprintln!("bench: sweep step, {n} subscribers");
        let report = rt.block_on(run(&run_args, &source))?;
        if args.json {
            println!("{report}");
        } else {
            print_table(&report);
            println!();
        }
        reports.push(report);
    }
    plot::write_svg(&args.plot, &reports)?;
    eprintln!("bench: plot written to {}", args.plot.display());
    Ok(())
}

struct Spawned {
    child: Child,
    base: String,
    key: String,
    _dir: TempDir,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spawn_server(args: &Args) -> anyhow::Result<Spawned> {
    let bin = match &args.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("aethex"),
    };
    if !bin.exists() {
        bail!("server binary {} not found: build it with `cargo build --release --bin aethex` or pass --server-bin", bin.display());
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("aethex-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let dir = TempDir(dir);
    let out = Command::new(&bin)
        .args(["channel", "create", &args.channel, "--data-dir"])
        .arg(&dir.0)
        .output()?;
    if !out.status.success() {
        bail!("channel create: {}", String::from_utf8_lossy(&out.stderr));
    }
    let created: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let key = created["stream_key"]
        .as_str()
        .context("stream_key")?
        .to_string();
    let mut child = Command::new(&bin)
        .args([
            "serve",
            "--http-listen",
            "127.0.0.1:0",
            "--udp-port",
            "0",
            "--advertise-ip",
            "127.0.0.1",
            "--data-dir",
        ])
        .arg(&dir.0)
        .env("AETHEX_LOG", "warn,str0m=error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("server stdout")?;
    // Read the banner for the HTTP address, and keep draining stdout so the server never
    // writes into a closed pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.trim_start().strip_prefix("HTTP ") {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .map(|a| format!("http://{a}")),
                );
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(20))
        .ok()
        .flatten()
        .context("the server printed no HTTP address")?;
    Ok(Spawned {
        child,
        base,
        key,
        _dir: dir,
    })
}

async fn run(args: &Args, source: &Arc<Source>) -> anyhow::Result<serde_json::Value> {
    let mut spawned = None;
    let (base, key, pid) = if args.spawn {
        let s = spawn_server(args)?;
        let t = (s.base.clone(), s.key.clone(), Some(s.child.id()));
        spawned = Some(s);
        t
    } else {
        let url = args.url.clone().context("pass --spawn or --url")?;
        let key = args.key.clone().context("--url needs --key")?;
        (url.trim_end_matches('/').to_string(), key, args.server_pid)
    };
    let result = measure(args, source, &base, &key, pid).await;
    if let Some(mut s) = spawned {
        let _ = Command::new("kill")
            .args(["-TERM", &s.child.id().to_string()])
            .status();
        let _ = s.child.wait();
    }
    result
}

async fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let end = Instant::now() + limit;
    while !done() {
        if Instant::now() >= end {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn measure(
    args: &Args,
    source: &Arc<Source>,
    base: &str,
    key: &str,
    pid: Option<u32>,
) -> anyhow::Result<serde_json::Value> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    for _ in 0..100 {
        if http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let role = Role::Publisher {
        source: source.clone(),
        fps: args.fps,
        keyframes: KeyframePolicy {
            repeat: args.keyint != 0,
            deaf: args.deaf_publisher,
        },
    };
    let publisher = Arc::new(PeerStats::default());
    let mut tasks = Vec::new();
    let whip = format!("{base}/whip");
    tasks.push(tokio::spawn(client::run(
        role,
        http.clone(),
        whip,
        Some(key.to_string()),
        epoch,
        publisher.clone(),
        stop.clone(),
    )));
    wait_until("the publisher to connect", Duration::from_secs(15), || {
        publisher.connected.load(Ordering::Relaxed)
    })
    .await?;
    let rss_before = pid.and_then(|p| procfs::rss_kib(p).ok());

    let whep = format!("{base}/whep/{}", args.channel);
    let subs: Vec<Arc<PeerStats>> = (0..args.subscribers)
        .map(|_| Arc::new(PeerStats::default()))
        .collect();
    for (i, s) in subs.iter().enumerate() {
        tasks.push(tokio::spawn(client::run(
            Role::Subscriber,
            http.clone(),
            whep.clone(),
            None,
            epoch,
            s.clone(),
            stop.clone(),
        )));
        if i % 10 == 9 {
            eprintln!("bench: {} subscribers joining", i + 1);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let all_playing = || subs.iter().all(|s| s.start_us.load(Ordering::Relaxed) > 0);
    let failed = || tasks.iter().any(|t| t.is_finished());
    let end = Instant::now() + Duration::from_secs(30);
    while !all_playing() {
        if failed() || Instant::now() >= end {
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                if let Ok(Err(e)) = t.await {
                    bail!("a peer failed: {e:#}");
                }
            }
            bail!("not every subscriber started within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("bench: {} subscribers playing; warming up 2 s", subs.len());
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Measurement window.
    let sum = |f: &dyn Fn(&PeerStats) -> u64| subs.iter().map(|s| f(s)).sum::<u64>();
    let cpu0 = pid.and_then(|p| procfs::cpu_time(p).ok());
    let own0 = procfs::cpu_time(std::process::id()).ok();
    let t0 = Instant::now();
    let pkts0 = sum(&|s| s.datagrams_in.load(Ordering::Relaxed));
    let bytes0 = sum(&|s| s.bytes_in.load(Ordering::Relaxed));
    let sent0 = publisher.frames.load(Ordering::Relaxed);
    for s in &subs {
        s.recording.store(true, Ordering::Relaxed);
    }
    for i in 0..args.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if failed() {
            break;
        }
        if !args.json && i % 5 == 4 {
            eprintln!("bench: {}/{} s", i + 1, args.seconds);
        }
    }
    let wall = t0.elapsed();
    let cpu1 = pid.and_then(|p| procfs::cpu_time(p).ok());
    let own1 = procfs::cpu_time(std::process::id()).ok();
    let pkts = sum(&|s| s.datagrams_in.load(Ordering::Relaxed)) - pkts0;
    let bytes = sum(&|s| s.bytes_in.load(Ordering::Relaxed)) - bytes0;
    let sent1 = publisher.frames.load(Ordering::Relaxed);
    // Frames sent in the window may still be in flight: keep recording briefly, then count
    // exactly the counters sent in the window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for s in &subs {
        s.recording.store(false, Ordering::Relaxed);
    }
    let window = (sent0 as u32)..(sent1 as u32);
    let frames: u64 = subs
        .iter()
        .map(|s| {
            stats::distinct_in(
                &s.counters.lock().unwrap_or_else(|p| p.into_inner()),
                &window,
            )
        })
        .sum();
    let sent = sent1 - sent0;
    let rss_after = pid.and_then(|p| procfs::rss_kib(p).ok());
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            eprintln!("bench: a peer ended with an error: {e:#}");
        }
    }

    let floor = if args.no_floor || subs.is_empty() {
        None
    } else {
        eprintln!(
            "bench: floor run ({} s: SRTP seal + send of the same stream to {} sockets)",
            args.seconds,
            subs.len()
        );
        let (frames, audio_bytes) = source.sizes();
        let w = floor::Workload {
            subscribers: subs.len(),
            frames,
            audio_bytes,
            fps: args.fps,
            duration: Duration::from_secs(args.seconds),
        };
        Some(tokio::task::spawn_blocking(move || floor::run(w)).await??)
    };
    let mut delays: Vec<u64> = subs
        .iter()
        .flat_map(|s| {
            s.delays_us
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        })
        .collect();
    let mut starts: Vec<u64> = subs
        .iter()
        .map(|s| s.start_us.load(Ordering::Relaxed))
        .collect();
    let expected = sent * subs.len() as u64;
    let loss_pct = if expected == 0 {
        0.0
    } else {
        (1.0 - frames as f64 / expected as f64).max(0.0) * 100.0
    };
    let server_cpu_us = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some((b - a).as_micros() as f64),
        _ => None,
    };
    let ms = |us: Option<u64>| us.map(|v| v as f64 / 1000.0);
    Ok(json!({
        "subscribers": subs.len(),
        "seconds": wall.as_secs_f64(),
        "codec": format!("{:?}", args.codec).to_lowercase(),
        "bitrate_kbps": match &**source {
            Source::Clip(c) => c.video_kbps(),
            Source::Synthetic { .. } => f64::from(args.kbps),
        },
        "egress_packets": pkts,
        "egress_bytes": bytes,
        "egress_pps": pkts as f64 / wall.as_secs_f64(),
        "server_cpu_pct": server_cpu_us.map(|c| c / wall.as_micros() as f64 * 100.0),
        "cpu_us_per_egress_packet": server_cpu_us.map(|c| if pkts == 0 { 0.0 } else { c / pkts as f64 }),
        "floor_us_per_packet": floor.map(|f| f.us_per_packet()),
        "floor_ratio": match (server_cpu_us, floor) {
            (Some(c), Some(f)) if pkts > 0 && f.us_per_packet() > 0.0 => Some(c / pkts as f64 / f.us_per_packet()),
            _ => None,
        },
        "frames_sent": sent,
        "frames_received": frames,
        "loss_pct": loss_pct,
        "reordered_frames": sum(&|s| s.reordered.load(Ordering::Relaxed)),
        "delay_ms": {
            "p50": ms(stats::percentile(&mut delays, 50.0)),
            "p95": ms(stats::percentile(&mut delays, 95.0)),
            "p99": ms(stats::percentile(&mut delays, 99.0)),
        },
        "start_ms": {
            "p50": ms(stats::percentile(&mut starts, 50.0)),
            "max": ms(starts.iter().copied().max()),
        },
        "server_rss_kib": rss_after,
        "rss_per_subscriber_kib": match (rss_before, rss_after) {
            (Some(a), Some(b)) if !subs.is_empty() => Some(b.saturating_sub(a) as f64 / subs.len() as f64),
            _ => None,
        },
        "keyframe_requests_at_publisher": publisher.keyframe_requests.load(Ordering::Relaxed),
        "keyint": args.keyint,
        "deaf_publisher": args.deaf_publisher,
        "loadgen_cpu_pct": match (own0, own1) {
            (Some(a), Some(b)) => Some((b - a).as_secs_f64() / wall.as_secs_f64() * 100.0),
            _ => None,
        },
    }))
}

fn print_table(r: &serde_json::Value) {
    let rows = [
        ("subscribers", r["subscribers"].to_string()),
        (
            "egress packets/s",
            format!("{:.0}", r["egress_pps"].as_f64().unwrap_or(0.0)),
        ),
        (
            "server CPU",
            format!("{:.1} %", r["server_cpu_pct"].as_f64().unwrap_or(f64::NAN)),
        ),
        (
            "CPU per egress packet",
            format!(
                "{:.2} us",
                r["cpu_us_per_egress_packet"].as_f64().unwrap_or(f64::NAN)
            ),
        ),
        (
            "frame loss",
            format!("{:.3} %", r["loss_pct"].as_f64().unwrap_or(0.0)),
        ),
        (
            "delay p50/p95/p99",
            format!(
                "{} / {} / {} ms",
                r["delay_ms"]["p50"], r["delay_ms"]["p95"], r["delay_ms"]["p99"]
            ),
        ),
        (
            "start p50/max",
            format!("{} / {} ms", r["start_ms"]["p50"], r["start_ms"]["max"]),
        ),
        (
            "server RSS per subscriber",
            format!("{} KiB", r["rss_per_subscriber_kib"]),
        ),
        (
            "load generator CPU",
            format!("{:.1} %", r["loadgen_cpu_pct"].as_f64().unwrap_or(f64::NAN)),
        ),
    ];
    for (k, v) in rows {
        println!("{k:<28} {v}");
    }
}
