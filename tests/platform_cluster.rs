//! The platform across processes, with the real binary on one PostgreSQL database (fresh per
//! test) and the real Redis (a fresh key prefix per test): a chat message sent on one `serve`
//! node reaches a WebSocket on another, and analytics count viewers at an origin and at its edge
//! (aiortc viewers) as one audience: live count summed through Redis, peak, watch time.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use storage::testing::TestDb;
use tungstenite::Message;

/// A fresh PostgreSQL database, created and (on drop) removed outside any runtime.
fn postgres() -> TestDb {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(TestDb::postgres())
}

/// A config file in `dir` sharing `db` and Redis under `prefix`, sampling every second.
fn shared_config(dir: &Path, db: &TestDb, prefix: &str) -> PathBuf {
    let redis =
        std::env::var("AETHEX_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let path = dir.join("config.toml");
    let text = format!(
        "[database]\nurl = \"{}\"\n[cluster]\nredis_url = \"{redis}\"\nredis_prefix = \"{prefix}\"\n\
         [analytics]\nsample_secs = 1\n",
        db.url
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn unique_prefix(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("aethex-e2e-{tag}-{}-{nanos}", std::process::id())
}

type Socket = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

/// A chat WebSocket on `base` (signed in with `token`), past its history frame.
fn chat(base: &str, token: Option<&str>) -> Socket {
    let mut url = format!("{}/api/channels/show/chat", base.replacen("http", "ws", 1));
    if let Some(t) = token {
        url = format!("{url}?token={t}");
    }
    let (mut ws, _) = tungstenite::connect(url).unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let Message::Text(first) = ws.read().unwrap() else {
        panic!("no history frame")
    };
    assert!(first.as_str().contains("history"), "{first}");
    ws
}

/// The next chat `message` frame's body (bounded by the socket's read timeout).
fn next_message(ws: &mut Socket) -> Value {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if let Ok(Message::Text(t)) = ws.read() {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "message" {
                return v;
            }
        }
    }
    panic!("no chat message within 5 s");
}

#[test]
fn a_chat_message_sent_on_one_serve_process_reaches_a_websocket_on_another() {
    let db = postgres();
    let prefix = unique_prefix("chat");
    let (dir_a, dir_b) = (temp_dir("chat-a"), temp_dir("chat-b"));
    let a = Server::start(
        &dir_a,
        &["--config", path(&shared_config(&dir_a, &db, &prefix))],
    );
    let b = Server::start(
        &dir_b,
        &["--config", path(&shared_config(&dir_b, &db, &prefix))],
    );
    let owner = register(&a.base, "owner");
    let (s, v) = api(
        &a.base,
        "POST",
        "/api/channels",
        Some(&owner),
        Some(json!({"name": "show"})),
    );
    assert_eq!(s, 201, "{v}");
    // One database: B knows the account and the channel A created.
    let fan = register(&b.base, "fan");
    assert_eq!(api(&b.base, "GET", "/api/channels/show", None, None).0, 200);

    let mut reader_b = chat(&b.base, None);
    let mut owner_a = chat(&a.base, Some(&owner));
    let mut fan_b = chat(&b.base, Some(&fan));
    let send = |ws: &mut Socket, body: &str| {
        ws.send(Message::text(
            json!({"type": "send", "body": body}).to_string(),
        ))
        .unwrap();
    };
    send(&mut owner_a, "hello from A");
    let got = next_message(&mut reader_b);
    assert_eq!(
        (got["body"].as_str(), got["user"].as_str()),
        (Some("hello from A"), Some("owner"))
    );
    assert_eq!(next_message(&mut fan_b)["id"], got["id"]);
    send(&mut fan_b, "hello from B");
    let back = next_message(&mut owner_a);
    assert_eq!(back["body"], "hello from A", "A sees its own message first");
    assert_eq!(next_message(&mut owner_a)["body"], "hello from B");
    // Both were stored once, in the shared database.
    let (s, v) = api(&b.base, "GET", "/api/channels/show", None, None);
    assert_eq!(s, 200, "{v}");
    let history = chat_history(&a.base);
    assert_eq!(history, vec!["hello from A", "hello from B"]);
    drop((a, b));
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Bodies of the chat history a new socket gets.
fn chat_history(base: &str) -> Vec<String> {
    let url = format!("{}/api/channels/show/chat", base.replacen("http", "ws", 1));
    let (mut ws, _) = tungstenite::connect(url).unwrap();
    let Message::Text(first) = ws.read().unwrap() else {
        panic!("no history frame")
    };
    let v: Value = serde_json::from_str(first.as_str()).unwrap();
    v["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("history frame: {v}"))
        .iter()
        .map(|m| m["body"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn analytics_count_origin_and_edge_viewers_as_one_audience() {
    let db = postgres();
    let prefix = unique_prefix("analytics");
    let (dir_o, dir_e) = (temp_dir("analytics-origin"), temp_dir("analytics-edge"));
    let config_o = shared_config(&dir_o, &db, &prefix);
    let origin = Server::start(
        &dir_o,
        &["--config", path(&config_o), "--relay-listen", "127.0.0.1:0"],
    );
    let config_e = shared_config(&dir_e, &db, &prefix);
    let edge = Server::start_edge(
        &dir_e,
        origin.relay_addr(),
        "eu",
        &["--config", path(&config_e)],
    );
    let owner = register(&origin.base, "owner");
    let (s, ch) = api(
        &origin.base,
        "POST",
        "/api/channels",
        Some(&owner),
        Some(json!({"name": "show"})),
    );
    assert_eq!(s, 201, "{ch}");
    let publisher = publisher(&origin, ch["stream_key"].as_str().unwrap(), "vp8", 40);

    let at_origin = viewer(&origin, "show", "origin viewer", 12);
    let at_edge = viewer_at(&format!("{}/whep/show", edge.base), "edge viewer", 12, &[]);
    // Each node counts its own viewer exactly and the other's through Redis.
    for node in [&origin, &edge] {
        let summed = until(
            Duration::from_secs(20),
            || api(&node.base, "GET", "/api/channels/show", None, None).1,
            |v| v["viewers"] == 2,
        );
        assert!(summed.is_some(), "{} shows both viewers", node.base);
    }
    for (name, peer) in [("origin", at_origin), ("edge", at_edge)] {
        let r = peer.result(Duration::from_secs(30));
        assert_eq!(r["ok"], true, "{name} viewer: {r}");
    }

    // Both sessions are closed (each node writes its own) and attributed to the stream.
    let report = || {
        api(
            &origin.base,
            "GET",
            "/api/channels/show/analytics",
            Some(&owner),
            None,
        )
        .1
    };
    let closed = until(Duration::from_secs(10), report, |r| {
        r["sessions"] == 2 && r["live_viewers"] == 0
    });
    let r = report();
    assert!(closed.is_some(), "two closed sessions: {r}");
    let watched = r["watch_time_secs"].as_u64().unwrap();
    assert!(
        (16..=28).contains(&watched),
        "two viewers of ~12 s each: {r}"
    );
    // Same machine, same client software: one unique viewer, by design (address + agent).
    assert_eq!(r["unique_viewers"], 1, "{r}");
    assert_eq!(
        r["peak_viewers"], 2,
        "the origin sampled the cluster's total: {r}"
    );
    assert!(r["retention"].as_array().unwrap().len() >= 5, "{r}");
    let stream = &r["streams"][0];
    assert_eq!(
        (
            stream["sessions"].as_u64(),
            stream["watch_time_secs"].as_u64()
        ),
        (Some(2), Some(watched)),
        "{r}"
    );
    drop(publisher);
    drop((edge, origin));
}
