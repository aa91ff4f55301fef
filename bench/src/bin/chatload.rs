//! `chatload`: chat fan-out latency and platform API latency against a running node.
//!
//! Chat: N anonymous WebSocket clients join a channel's chat; one signed-in sender sends M
//! messages, each carrying its send time; every client records receive time minus send time.
//! Reported: deliveries (of N x M), p50 / p99 / max latency. API: `GET /api/channels/{name}`
//! at a steady rate for some seconds (open loop: requests start on schedule whether or not
//! earlier ones finished), p50 / p99 / max.
//!
//!   chatload --base http://127.0.0.1:8080 --clients 1000 --messages 10
//!
//! Run on the same machine as the server, so both clocks are one; raise `ulimit -n` first for
//! thousands of clients (each is a socket on both sides).
//!
//! Clients come from many loopback addresses (127.2.x.y, `--source-ips`), as an audience comes
//! from many hosts: the server's per-address burst limit (40, then 20/s) would otherwise refuse
//! most of them with 429, which the tool counts as failures.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Chat fan-out and API latency against a running AeThex LIVE node.
#[derive(Parser)]
struct Args {
    /// The node's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base: String,
    /// Chat clients (anonymous readers).
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Messages the sender sends.
    #[arg(long, default_value_t = 10)]
    messages: usize,
    /// Between two messages (the server allows 5 at once, then 1 per second per user).
    #[arg(long, default_value_t = 1100)]
    interval_ms: u64,
    /// Clients connecting at once.
    #[arg(long, default_value_t = 200)]
    connect_batch: usize,
    /// API requests per second (0: no API measurement).
    #[arg(long, default_value_t = 200)]
    api_rps: u64,
    /// API measurement length in seconds.
    #[arg(long, default_value_t = 10)]
    api_secs: u64,
    /// Loopback source addresses the clients are spread over (127.2.0.0 and up).
    #[arg(long, default_value_t = 1024)]
    source_ips: u32,
}

/// The k-th source address: 127.2.0.0, 127.2.0.1, ...
fn source_ip(k: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 2, 0, 0)) + k))
}

/// The server's address, from the base URL.
async fn server_addr(base: &str) -> anyhow::Result<SocketAddr> {
    let url = reqwest::Url::parse(base)?;
    let host = url.host_str().context("no host in --base")?;
    let port = url.port_or_known_default().context("no port in --base")?;
    let found = tokio::net::lookup_host((host, port)).await?.next();
    found.context("--base does not resolve")
}

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The p-th percentile (nearest rank) of sorted samples.
fn rank(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let k = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[k.clamp(1, sorted.len()) - 1]
}

fn report(what: &str, mut samples: Vec<u64>) {
    samples.sort_unstable();
    println!(
        "{what}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        samples.len(),
        rank(&samples, 50.0) as f64 / 1000.0,
        rank(&samples, 99.0) as f64 / 1000.0,
        samples.last().copied().unwrap_or(0) as f64 / 1000.0
    );
}

/// Register a fresh user and create a fresh channel: (token, channel).
async fn setup(http: &reqwest::Client, base: &str) -> anyhow::Result<(String, String)> {
    let tag = micros_now() % 1_000_000_000;
    let name = format!("load{tag}");
    let r: Value = http
        .post(format!("{base}/api/users"))
        .json(&json!({"name": name, "password": "load-test-password"}))
        .send()
        .await?
        .json()
        .await?;
    let token = r["token"]
        .as_str()
        .with_context(|| format!("register: {r}"))?
        .to_string();
    let channel = format!("chat{tag}");
    let r = http
        .post(format!("{base}/api/channels"))
        .bearer_auth(&token)
        .json(&json!({"name": channel}))
        .send()
        .await?;
    if r.status() != 201 {
        bail!("create channel: {} {}", r.status(), r.text().await?);
    }
    Ok((token, channel))
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A WebSocket to `url` (at `server`) from source address `from`.
async fn connect(url: &str, server: SocketAddr, from: IpAddr) -> anyhow::Result<Ws> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let tcp = socket.connect(server).await?;
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await?;
    // The history event comes first.
    ws.next().await.context("no history")??;
    Ok(ws)
}

async fn chat(args: &Args, token: &str, channel: &str) -> anyhow::Result<()> {
    let ws_base = args.base.replacen("http", "ws", 1);
    let url = format!("{ws_base}/api/channels/{channel}/chat");
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(args.clients * args.messages)));
    let started = Instant::now();
    let mut readers = Vec::new();
    let mut connected = 0;
    let server = server_addr(&args.base).await?;
    let ips = args.source_ips.max(1);
    while connected < args.clients {
        let batch = args.connect_batch.min(args.clients - connected);
        let conns = futures_util::future::join_all((0..batch).map(|i| {
            let k = u32::try_from(connected + i).unwrap_or(0) % ips;
            connect(&url, server, source_ip(k))
        }))
        .await;
        for ws in conns {
            let mut ws = ws?;
            let (lat, want) = (latencies.clone(), args.messages);
            readers.push(tokio::spawn(async move {
                let mut got = 0;
                while got < want {
                    let Ok(Some(Ok(Message::Text(t)))) =
                        tokio::time::timeout(Duration::from_secs(30), ws.next()).await
                    else {
                        return (got, ws);
                    };
                    let now = micros_now();
                    let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                        continue;
                    };
                    if v["type"] == "message" {
                        let sent: u64 = v["body"].as_str().unwrap_or("").parse().unwrap_or(now);
                        lat.lock().unwrap().push((sent, now.saturating_sub(sent)));
                        got += 1;
                    }
                }
                // The socket stays open until every reader is done: closing 10,000 sockets
                // while the last message is still arriving would be measured as its latency.
                (got, ws)
            }));
        }
        connected += batch;
    }
    println!(
        "{} chat clients connected in {:.1} s",
        args.clients,
        started.elapsed().as_secs_f64()
    );
    let mut sender = connect(&format!("{url}?token={token}"), server, source_ip(ips)).await?;
    for _ in 0..args.messages {
        let frame = json!({"type": "send", "body": micros_now().to_string()}).to_string();
        sender.send(Message::text(frame)).await?;
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    let mut delivered = 0;
    let mut open = Vec::with_capacity(readers.len());
    for r in readers {
        if let Ok((got, ws)) = r.await {
            delivered += got;
            open.push(ws);
        }
    }
    println!(
        "delivered {delivered} of {} ({} clients x {} messages)",
        args.clients * args.messages,
        args.clients,
        args.messages
    );
    let samples = std::mem::take(&mut *latencies.lock().unwrap());
    // Each message's own spread: how long one fan-out takes, first to last socket.
    let mut by_message: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
    for &(sent, lat) in &samples {
        by_message.entry(sent).or_default().push(lat);
    }
    for (i, lats) in by_message.into_values().enumerate() {
        report(&format!("  message {}", i + 1), lats);
    }
    report(
        &format!("chat fan-out latency, {} clients", args.clients),
        samples.into_iter().map(|(_, l)| l).collect(),
    );
    drop(open);
    Ok(())
}

async fn api(args: &Args, channel: &str) -> anyhow::Result<()> {
    if args.api_rps == 0 {
        return Ok(());
    }
    // One client per source address, each well inside the per-address burst limit.
    let clients: Vec<reqwest::Client> = (0..args.source_ips.clamp(1, 64))
        .map(|k| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .local_address(source_ip(k))
                .build()
        })
        .collect::<Result<_, _>>()?;
    let url = format!("{}/api/channels/{channel}", args.base);
    let period = Duration::from_secs_f64(1.0 / args.api_rps as f64);
    let total = args.api_rps * args.api_secs;
    let mut tasks = Vec::with_capacity(total as usize);
    let start = tokio::time::Instant::now();
    for i in 0..total {
        tokio::time::sleep_until(start + period * i as u32).await;
        let http = clients[usize::try_from(i).unwrap_or(0) % clients.len()].clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let ok = http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            (ok, t.elapsed().as_micros() as u64)
        }));
    }
    let mut samples = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok((true, us)) => samples.push(us),
            _ => failed += 1,
        }
    }
    println!(
        "api: {total} requests at {} /s, {failed} failed",
        args.api_rps
    );
    report(
        &format!("GET /api/channels/{{name}} at {} /s", args.api_rps),
        samples,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let (token, channel) = setup(&http, &args.base).await?;
    if args.clients > 0 {
        chat(&args, &token, &channel).await?;
    }
    api(&args, &channel).await
}
