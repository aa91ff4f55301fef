//! Nothing accepted is lost: the real binary is killed (SIGKILL) in the middle of a burst of
//! follows and chat messages, and restarted on the same data. Every follow that got a 2xx is in
//! the database, every chat message the server broadcast (it stores before it broadcasts) is in
//! the history, and every accepted `follow` webhook event is delivered after the restart.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

/// A webhook receiver on loopback (a thread with a tiny HTTP/1.1 server): every body it gets.
fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let sink = sink.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok() {
                    if let Ok(v) = serde_json::from_slice(&body) {
                        sink.lock().unwrap().push(v);
                    }
                }
                let mut w = stream;
                let _ = w.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
            });
        }
    });
    (url, got)
}

#[test]
fn follows_chat_and_webhook_events_accepted_before_a_kill_survive_it() {
    let dir = temp_dir("durability");
    // The webhook receiver is on loopback: allowed, as for an on-premises receiver.
    let cfg = dir.join("webhooks.toml");
    std::fs::write(&cfg, "[webhooks]\nallow_private_networks = true\n").unwrap();
    let cfg = cfg.display().to_string();
    let server = Server::start(&dir, &["--config", &cfg]);
    let base = server.base.clone();
    let owner = register(&base, "owner");
    assert_eq!(
        api(
            &base,
            "POST",
            "/api/channels",
            Some(&owner),
            Some(json!({"name": "show"}))
        )
        .0,
        201
    );
    let (hook_url, delivered) = receiver();
    let hook = json!({"url": hook_url, "events": ["follow"]});
    assert_eq!(
        api(
            &base,
            "POST",
            "/api/channels/show/webhooks",
            Some(&owner),
            Some(hook)
        )
        .0,
        201
    );
    let fans: Vec<(String, String)> = (0..40)
        .map(|i| {
            let name = format!("fan{i}");
            let token = register(&base, &name);
            (name, token)
        })
        .collect();

    // The burst: follows from one thread, chat from another, until the server dies.
    let stop = Arc::new(AtomicBool::new(false));
    let followed = Arc::new(Mutex::new(Vec::new()));
    let follow_thread = {
        let (base, fans, followed, stop) =
            (base.clone(), fans.clone(), followed.clone(), stop.clone());
        std::thread::spawn(move || {
            for (name, token) in fans {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if api(
                    &base,
                    "PUT",
                    "/api/channels/show/follow",
                    Some(&token),
                    None,
                )
                .0 == 204
                {
                    followed.lock().unwrap().push(name);
                }
            }
        })
    };
    let chatted = Arc::new(Mutex::new(Vec::new()));
    let chat_thread = {
        let ws_url = format!(
            "{}/api/channels/show/chat?token={owner}",
            base.replacen("http", "ws", 1)
        );
        let (chatted, stop) = (chatted.clone(), stop.clone());
        std::thread::spawn(move || {
            let Ok((mut ws, _)) = tungstenite::connect(ws_url) else {
                return;
            };
            let _ = ws.read(); // history
            let until = Instant::now() + Duration::from_secs(20);
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                let frame = json!({"type": "send", "body": format!("burst {i}")}).to_string();
                if ws.send(Message::text(frame)).is_err() {
                    return;
                }
                i += 1;
                match ws.read() {
                    Ok(Message::Text(t)) => {
                        let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                        if v["type"] == "message" {
                            chatted
                                .lock()
                                .unwrap()
                                .push(v["id"].as_str().unwrap_or("").to_string());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1200));
    server.kill();
    stop.store(true, Ordering::Relaxed);
    follow_thread.join().unwrap();
    chat_thread.join().unwrap();
    let followed = followed.lock().unwrap().clone();
    let chatted = chatted.lock().unwrap().clone();
    eprintln!(
        "before the kill: {} follows got 204, {} chat messages were broadcast",
        followed.len(),
        chatted.len()
    );
    assert!(
        !followed.is_empty() && !chatted.is_empty(),
        "the kill came during the burst"
    );

    let server = Server::start(&dir, &["--config", &cfg]);
    let base = server.base.clone();
    let (_, v) = api(
        &base,
        "GET",
        "/api/channels/show/followers?limit=100",
        None,
        None,
    );
    let stored: HashSet<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["user"].as_str().unwrap())
        .collect();
    for name in &followed {
        assert!(
            stored.contains(name.as_str()),
            "follow of {name} got 204 but is gone: {v}"
        );
    }
    let (mut ws, _) = tungstenite::connect(format!(
        "{}/api/channels/show/chat",
        base.replacen("http", "ws", 1)
    ))
    .unwrap();
    let Message::Text(history) = ws.read().unwrap() else {
        panic!("no history")
    };
    let history: Value = serde_json::from_str(history.as_str()).unwrap();
    let ids: HashSet<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for id in &chatted {
        assert!(
            ids.contains(id.as_str()),
            "message {id} was broadcast but is gone"
        );
    }
    // Every accepted follow is announced, after the restart if not before (at least once).
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let users: HashSet<String> = delivered
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| e["data"]["user"].as_str().map(str::to_string))
            .collect();
        if followed.iter().all(|f| users.contains(f)) {
            break;
        }
        assert!(
            Instant::now() < until,
            "undelivered follow events: have {users:?}, want {followed:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.stop().success());
}
