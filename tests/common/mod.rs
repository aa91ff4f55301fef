//! Shared helpers for the end-to-end tests: the real `aethex` binary as a child process, the
//! aiortc peer (tests/peers/aiortc_peer.py) as an independent WebRTC implementation.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_aethex");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh data directory under the target dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("aethex-e2e-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `aethex channel create NAME --data-dir DIR`, parsed.
pub fn create_channel(data_dir: &Path, name: &str) -> Value {
    let out = Command::new(BIN)
        .args(["channel", "create", name, "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "channel create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("channel create prints JSON")
}

/// Lines of a child's stdout, read on a thread, as a channel.
fn lines_of(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `aethex serve` on loopback with OS-chosen ports, media advertised on 127.0.0.1.
pub fn serve_command(data_dir: &Path) -> Command {
    node_command(&["serve"], data_dir)
}

/// `aethex <role args> --http-listen 127.0.0.1:0 --udp-port 0 --advertise-ip 127.0.0.1
/// --data-dir <dir>`: a node on loopback with OS-chosen ports.
pub fn node_command(role: &[&str], data_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(role)
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--udp-port",
            "0",
            "--advertise-ip",
            "127.0.0.1",
            "--data-dir",
        ])
        .arg(data_dir);
    cmd
}

/// The real binary, serving on loopback with OS-chosen ports.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub udp: SocketAddr,
    pub log: PathBuf,
    /// Stdout lines after the ones `start` read (later banner lines, e.g. the relay's).
    pub lines: mpsc::Receiver<String>,
}

/// The cluster secret of the relay tests.
pub const RELAY_SECRET: &str = "test-cluster-secret-0123456789";

impl Server {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_command(serve_command(data_dir), data_dir, extra)
    }

    /// `aethex edge --origin <upstream> --region <region>` on loopback with OS-chosen ports.
    pub fn start_edge(data_dir: &Path, upstream: SocketAddr, region: &str, extra: &[&str]) -> Self {
        let upstream = upstream.to_string();
        let role = ["edge", "--origin", &upstream, "--region", region];
        Self::start_command(node_command(&role, data_dir), data_dir, extra)
    }

    /// The address of the relay listener (`--relay-listen 127.0.0.1:0`), from the banner.
    pub fn relay_addr(&self) -> SocketAddr {
        let line = self.wait_line("relay (QUIC)", Duration::from_secs(10));
        line.split_whitespace()
            .nth(2)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    /// The next stdout line containing `needle` (bounded).
    pub fn wait_line(&self, needle: &str, within: Duration) -> String {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!("no line with {needle:?}; log: {}", self.log_text()),
            }
        }
    }

    fn start_command(mut command: Command, data_dir: &Path, extra: &[&str]) -> Self {
        let log = data_dir.join("server.log");
        let mut child = command
            .args(extra)
            .env("AETHEX_LOG", "info,str0m=warn")
            .env("AETHEX_RELAY_SECRET", RELAY_SECRET)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn aethex serve");
        let rx = lines_of(child.stdout.take().unwrap());
        let (mut http, mut udp) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.is_none() || udp.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no banner; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
            let field = |l: &str| {
                l.split_whitespace()
                    .nth(if l.contains("media (UDP)") { 2 } else { 1 })
                    .map(str::to_string)
            };
            if line.trim_start().starts_with("HTTP ") {
                http = field(&line);
            } else if line.contains("media (UDP)") {
                udp = field(&line).and_then(|a| a.parse::<SocketAddr>().ok());
            }
        }
        let http = http.unwrap();
        let mut udp = udp.unwrap();
        udp.set_ip("127.0.0.1".parse().unwrap());
        let server = Self {
            child: Some(child),
            base: format!("http://{http}"),
            udp,
            log,
            lines: rx,
        };
        server.wait_healthy();
        server
    }

    fn wait_healthy(&self) {
        let client = http();
        for _ in 0..100 {
            if client
                .get(format!("{}/healthz", self.base))
                .send()
                .is_ok_and(|r| r.status() == 200)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("server never became healthy");
    }

    /// One gauge or counter from /metrics (the first series whose name and labels match).
    pub fn metric(&self, series: &str) -> f64 {
        let text = http()
            .get(format!("{}/metrics", self.base))
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no series {series} in /metrics"))
    }

    /// Wait until a metric has a value (bounded).
    pub fn wait_metric(&self, series: &str, want: f64, within: Duration) -> f64 {
        let end = Instant::now() + within;
        loop {
            let v = self.metric(series);
            if v == want || Instant::now() >= end {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.term();
        self.wait_exit(Duration::from_secs(10))
            .expect("server exits within 10 s of SIGTERM")
    }

    /// Stop the process for `d` (SIGSTOP, then SIGCONT): a stalled node, as a starved or
    /// paused VM would be.
    pub fn pause(&self, d: Duration) {
        if let Some(child) = &self.child {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-STOP", &pid]).status();
            std::thread::sleep(d);
            let _ = Command::new("kill").args(["-CONT", &pid]).status();
        }
    }

    /// Send SIGTERM (an edge then drains).
    pub fn term(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
    }

    /// Whether the process has exited, without waiting.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Wait (bounded) for the process to exit; `None` (and killed) if it did not.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let end = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= end {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the node dies without a word (no drain, no goodbye to its upstream).
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The venv python with aiortc. Missing: fail loudly with the fix.
pub fn python() -> PathBuf {
    let py = repo().join(".venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/install-test-deps.sh (creates .venv with aiortc from tests/peers/requirements.txt)",
        py.display()
    );
    py
}

/// A running aiortc peer; stdout JSON lines arrive on a channel.
pub struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub name: String,
}

impl Peer {
    pub fn spawn(name: &str, args: &[String]) -> Self {
        let mut child = Command::new(python())
            .arg(repo().join("tests/peers/aiortc_peer.py"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn aiortc peer");
        let rx = lines_of(child.stdout.take().unwrap());
        Self {
            child,
            lines: rx,
            name: name.to_string(),
        }
    }

    /// Wait for a JSON line satisfying `pred` (bounded).
    pub fn wait_for(&self, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{}: no expected output within {within:?}", self.name));
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if pred(&v) {
                    return v;
                }
            }
        }
    }

    /// The final result line (has "ok").
    pub fn result(mut self, within: Duration) -> Value {
        let v = self.wait_for(within, |v| v.get("ok").is_some());
        let _ = self.child.wait();
        v
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn s(v: impl ToString) -> String {
    v.to_string()
}

/// An aiortc WHEP viewer of `channel` for `seconds`, needing 30 decoded video frames.
pub fn viewer(server: &Server, channel: &str, name: &str, seconds: u32) -> Peer {
    viewer_at(
        &format!("{}/whep/{channel}", server.base),
        name,
        seconds,
        &[],
    )
}

/// An aiortc WHEP viewer of a WHEP URL (redirects followed), needing 30 decoded video frames.
pub fn viewer_at(url: &str, name: &str, seconds: u32, extra: &[&str]) -> Peer {
    let mut args = vec![
        s("view"),
        s("--url"),
        s(url),
        s("--duration"),
        seconds.to_string(),
        s("--min-video-frames"),
        s("30"),
    ];
    args.extend(extra.iter().map(s));
    Peer::spawn(name, &args)
}

/// POST a (placeholder, one media section) WHEP offer without following redirects: the status and `Location`.
pub fn whep_probe(url: &str, headers: &[(&str, &str)]) -> (u16, Option<String>) {
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut req = client
        .post(url)
        .header("content-type", "application/sdp")
        .body("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().unwrap();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (resp.status().as_u16(), location)
}

/// Poll `probe` every 100 ms until `done` holds (bounded); the time it took, or `None`.
pub fn until<T>(
    within: Duration,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if done(&probe()) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// An aiortc WHIP publisher (320x240, keyframes only when asked), once it is live.
pub fn publisher(server: &Server, key: &str, codec: &str, seconds: u32) -> Peer {
    publisher_sized(server, key, codec, seconds, (320, 240))
}

/// An aiortc WHIP publisher of `size` (width, height) pictures, keyframes only when asked,
/// once it is live.
pub fn publisher_sized(
    server: &Server,
    key: &str,
    codec: &str,
    seconds: u32,
    size: (u32, u32),
) -> Peer {
    publisher_at(&format!("{}/whip", server.base), key, codec, seconds, size)
}

/// An aiortc WHIP publisher at `url` (e.g. `/whip/{channel}` with a stage invite as `key`), as
/// [`publisher_sized`].
pub fn publisher_at(url: &str, key: &str, codec: &str, seconds: u32, size: (u32, u32)) -> Peer {
    publisher_with(url, key, codec, seconds, size, &[])
}

/// [`publisher_at`] with more arguments (e.g. `--tone 1200`).
pub fn publisher_with(
    url: &str,
    key: &str,
    codec: &str,
    seconds: u32,
    size: (u32, u32),
    extra: &[&str],
) -> Peer {
    let (width, height) = (size.0.to_string(), size.1.to_string());
    let args = [
        "publish",
        "--url",
        url,
        "--token",
        key,
        "--codec",
        codec,
        "--duration",
        &seconds.to_string(),
        "--width",
        &width,
        "--height",
        &height,
        "--keyint",
        "100000",
    ];
    let args: Vec<String> = args.iter().chain(extra).map(s).collect();
    let p = Peer::spawn(&format!("{codec} publisher"), &args);
    p.wait_for(Duration::from_secs(20), |v| v["event"] == "live");
    p
}

/// A UDP proxy on loopback that drops a share of the datagrams going back to the client
/// (upstream -> client), chosen by a fixed pseudo-random sequence, after the first `spare`
/// ones (the QUIC handshake). Stops when dropped.
pub struct LossyProxy {
    pub addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl LossyProxy {
    pub fn start(upstream: SocketAddr, loss_percent: u64, spare: u64) -> Self {
        use std::net::UdpSocket;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        back.connect(upstream).unwrap();
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
        }
        let addr = front.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let (front2, back2) = (front.try_clone().unwrap(), back.try_clone().unwrap());
        let (stop1, stop2, client1, client2) = (stop.clone(), stop.clone(), client.clone(), client);
        let forward = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop1.load(Ordering::Relaxed) {
                if let Ok((n, from)) = front.recv_from(&mut buf) {
                    *client1.lock().unwrap() = Some(from);
                    let _ = back.send(&buf[..n]);
                }
            }
        });
        let dropped2 = dropped.clone();
        let backward = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let (mut seen, mut rng) = (0u64, 0x9E37_79B9_7F4A_7C15u64);
            while !stop2.load(Ordering::Relaxed) {
                let Ok(n) = back2.recv(&mut buf) else {
                    continue;
                };
                seen += 1;
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                if seen > spare && rng % 100 < loss_percent {
                    dropped2.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if let Some(c) = *client2.lock().unwrap() {
                    let _ = front2.send_to(&buf[..n], c);
                }
            }
        });
        Self {
            addr,
            stop,
            dropped,
            threads: vec![forward, backward],
        }
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A platform API call: the status (0 when the server is unreachable) and the JSON body.
pub fn api(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = http();
    let mut req = client.request(method.parse().unwrap(), format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    match req.send() {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// Register `name` and return its session token.
pub fn register(base: &str, name: &str) -> String {
    let (s, v) = api(
        base,
        "POST",
        "/api/users",
        None,
        Some(json!({"name": name, "password": "correct horse"})),
    );
    assert_eq!(s, 201, "{v}");
    v["token"].as_str().unwrap().to_string()
}

/// `aethex channel ARGS --data-dir DIR` (offline, with the relay tests' secret): its JSON.
pub fn channel_cli(dir: &std::path::Path, args: &[&str]) -> Value {
    cli(dir, "channel", args)
}

/// `aethex COMMAND ARGS --data-dir DIR` (with the relay tests' secret): its JSON.
pub fn cli(dir: &std::path::Path, command: &str, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .arg(command)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("AETHEX_RELAY_SECRET", RELAY_SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The picture sizes a viewer's video sections decoded, in m-line order (each section's
/// sizes joined by `+`, `-` for a section that decoded nothing).
pub fn section_sizes(v: &Value) -> Vec<String> {
    let tracks = v["tracks"]
        .as_array()
        .unwrap_or_else(|| panic!("no tracks: {v}"));
    tracks
        .iter()
        .filter(|t| t["kind"] == "video")
        .map(|t| {
            let sizes: Vec<&String> = t["sizes"]
                .as_object()
                .map_or(vec![], |m| m.keys().collect());
            if sizes.is_empty() {
                "-".into()
            } else {
                sizes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("+")
            }
        })
        .collect()
}

/// A one-section viewer and a three-section viewer of a stage at `whep`, 6 s each, both
/// analysing the test tones 440, 1,200 and 2,500 Hz: their results.
pub fn watch_stage(whep: &str) -> (Value, Value) {
    let tones = ["--tones", "440,1200,2500"];
    let single = viewer_at(whep, "a one-section viewer", 6, &tones);
    let sections = ["--video-sections", "3", "--audio-sections", "3"];
    let all = viewer_at(
        whep,
        "a three-section viewer",
        6,
        &[&sections[..], &tones].concat(),
    );
    let wait = Duration::from_secs(40);
    (single.result(wait), all.result(wait))
}

/// A viewer result's tracks of `kind` (`video` or `audio`), in section order.
pub fn tracks_of(v: &Value, kind: &str) -> Vec<Value> {
    let tracks = v["tracks"].as_array().map_or(&[][..], Vec::as_slice);
    tracks
        .iter()
        .filter(|t| t["kind"] == kind)
        .cloned()
        .collect()
}

/// What [`watch_stage`] must show of a stage whose host (640x360, 440 Hz) and two guests
/// (320x180 at 1,200 Hz, 480x270 at 2,500 Hz) publish: the one-section viewer decodes one
/// participant's video (the featured one) and a mix in which every tone is heard; the
/// three-section viewer decodes each participant, the host (the loudest: featured) first.
pub fn assert_watched_stage(single: &Value, all: &Value) {
    let audio = tracks_of(single, "audio")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no audio section: {single}"));
    let video = tracks_of(single, "video")
        .into_iter()
        .next()
        .unwrap_or_default();
    eprintln!(
        "one-section viewer: video {:?} ({} frames, longest gap {} ms), audio peak {} Hz, \
         tone powers {}; g2g p50 {} p95 {} ms",
        section_sizes(single),
        video["sizes"],
        video["max_gap_ms"],
        audio["peak_hz"],
        audio["tone_power"],
        single["g2g_ms_p50"],
        single["g2g_ms_p95"]
    );
    assert_eq!(single["ok"], true, "{single}");
    let sizes = section_sizes(single);
    assert_eq!(sizes.len(), 1, "{single}");
    assert!(
        ["640x360", "320x180", "480x270"]
            .iter()
            .any(|s| sizes[0].split('+').any(|x| x == *s)),
        "the featured participant's video: {sizes:?}"
    );
    for tone in ["440", "1200", "2500"] {
        let power = audio["tone_power"][tone].as_f64().unwrap_or(0.0);
        assert!(
            power > 20.0,
            "the {tone} Hz participant is in the mix (power {power}): {audio}"
        );
    }
    assert_eq!(all["ok"], true, "{all}");
    let mut sizes = section_sizes(all);
    sizes[1..].sort();
    assert_eq!(sizes, ["640x360", "320x180", "480x270"], "{all}");
}

/// A stage of `channel` publishing at `whip` for 30 s: the host with `key` (640x360, a
/// 440 Hz tone) and two guests invited with `aethex stage invite` in `dir`, Ann (320x180,
/// 1,200 Hz) and Bob (480x270, 2,500 Hz), each half as loud as the host (so the host is the
/// active speaker and stays featured). The host's and the guests' publishers.
pub fn tone_stage(dir: &Path, whip: &str, channel: &str, key: &str) -> (Peer, Vec<Peer>) {
    let host = publisher_with(whip, key, "vp8", 30, (640, 360), &["--tone", "440"]);
    let mut guests = Vec::new();
    for (name, size, tone) in [("Ann", (320, 180), "1200"), ("Bob", (480, 270), "2500")] {
        let invite = cli(dir, "stage", &["invite", channel, "--name", name]);
        let token = invite["token"].as_str().unwrap().to_string();
        let args = ["--tone", tone, "--volume", GUEST_VOLUME];
        guests.push(publisher_with(whip, &token, "vp8", 30, size, &args));
    }
    (host, guests)
}

/// The loudness of the test stages' guests (the host's is 0.3 of full scale): a stage's
/// featured participant, who takes a viewer's first section, stays the host.
pub const GUEST_VOLUME: &str = "0.15";

/// A user `hostess` registered through the API and a channel `name` of hers: her session token
/// and the channel's stream key.
pub fn owned_channel(server: &Server, name: &str) -> (String, String) {
    let owner = register(&server.base, "hostess");
    let body = serde_json::json!({ "name": name });
    let (s, v) = api(
        &server.base,
        "POST",
        "/api/channels",
        Some(&owner),
        Some(body),
    );
    assert_eq!(s, 201, "{v}");
    (owner, v["stream_key"].as_str().unwrap().to_string())
}
