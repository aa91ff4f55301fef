//! Region routing, private channels, draining and healing, with the real binary: an origin,
//! edges in two regions and a tier-2 edge on loopback; aiortc (an independent WebRTC
//! implementation) publishes and views, following the 307 redirects like any WHEP client.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn metrics_text(server: &Server) -> String {
    http()
        .get(format!("{}/metrics", server.base))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

#[test]
fn viewers_are_sent_to_an_edge_of_their_region_and_a_killed_edge_leaves_routing() {
    let dir = temp_dir("route-origin");
    let ch = create_channel(&dir, "show");
    let origin = Server::start(&dir, &["--relay-listen", "127.0.0.1:0"]);
    let relay = origin.relay_addr();
    let eu = Server::start_edge(
        &temp_dir("route-eu"),
        relay,
        "eu",
        &["--relay-listen", "127.0.0.1:0"],
    );
    let eu_relay = eu.relay_addr();
    let us = Server::start_edge(&temp_dir("route-us"), relay, "us", &[]);
    let paris = Server::start_edge(&temp_dir("route-paris"), eu_relay, "eu-paris", &[]);

    let at_origin = format!("{}/whep/show", origin.base);
    let redirected = |url: &str, headers: &[(&str, &str)]| {
        let probe = || whep_probe(url, headers);
        until(Duration::from_secs(10), probe, |(status, _)| *status == 307)
            .unwrap_or_else(|| panic!("{url} is never redirected"));
        whep_probe(url, headers).1.unwrap()
    };
    // By ?region= and by the X-Region header a CDN or geo proxy sets; the query is kept.
    let to = redirected(&format!("{at_origin}?region=eu&layer=low"), &[]);
    assert_eq!(to, format!("{}/whep/show?region=eu&layer=low", eu.base));
    let to = redirected(&at_origin, &[("x-region", "us")]);
    assert_eq!(to, format!("{}/whep/show", us.base));
    // A tier-1 edge routes viewers of the region below it to its tier-2 edge.
    let to = redirected(&format!("{}/whep/show?region=eu-paris", eu.base), &[]);
    assert!(to.starts_with(&paris.base), "{to}");
    // No edge in the region, or the node's own region: served where asked, not redirected (the
    // placeholder offer is refused as bad SDP, or the channel is offline at the edge).
    for url in [
        format!("{at_origin}?region=ap"),
        format!("{}/whep/show?region=eu", eu.base),
    ] {
        let status = whep_probe(&url, &[]).0;
        assert!(matches!(status, 400 | 404), "{url}: {status}");
    }

    // Media at every edge, following the redirects: origin -> eu and us edges, and eu edge ->
    // tier-2 edge.
    let key = ch["stream_key"].as_str().unwrap();
    let publisher = publisher(&origin, key, "vp8", 18);
    std::thread::sleep(Duration::from_secs(2));
    // The platform API sees the channel live (from the SFU's stream stats).
    let live: serde_json::Value = http()
        .get(format!("{}/api/live", origin.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(live["items"][0]["name"], "show", "{live}");
    assert_eq!(live["items"][0]["live"], true, "{live}");
    let via_origin = viewer_at(&format!("{at_origin}?region=eu"), "eu viewer", 10, &[]);
    let via_origin_us = viewer_at(&format!("{at_origin}?region=us"), "us viewer", 10, &[]);
    let via_eu = viewer_at(
        &format!("{}/whep/show?region=eu-paris", eu.base),
        "paris viewer",
        10,
        &[],
    );
    // Viewer counts go up the relay tree in load reports, without Redis: the origin counts
    // all three, the paris viewer through the eu edge.
    let count = || {
        http()
            .get(format!("{}/api/channels/show", origin.base))
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok())
            .map_or(Value::Null, |v| v["viewers"].clone())
    };
    let seen = until(Duration::from_secs(8), count, |v| *v == 3);
    assert!(seen.is_some(), "the origin counts 3 viewers: {}", count());
    for (name, v, edge) in [
        ("eu", via_origin, &eu),
        ("us", via_origin_us, &us),
        ("paris", via_eu, &paris),
    ] {
        let r = v.result(Duration::from_secs(40));
        eprintln!("{name} viewer: {r}");
        assert_eq!(r["ok"], true, "{name}: {r}");
        assert!(r["video_frames"].as_u64().unwrap() >= 30, "{r}");
        let hops = r["redirects"].as_array().unwrap();
        assert_eq!(hops.len(), 1, "{r}");
        assert!(hops[0].as_str().unwrap().starts_with(&edge.base), "{r}");
    }
    assert_eq!(publisher.result(Duration::from_secs(40))["ok"], true);

    // Per-edge relay figures at the origin, and the upstream link at an edge.
    let text = metrics_text(&origin);
    assert_eq!(origin.metric("aethex_relay_edges"), 2.0, "{text}");
    for series in [
        "aethex_relay_edge_rtt_seconds{edge=\"eu-",
        "aethex_relay_edge_sent_bytes_total{edge=\"eu-",
        "aethex_relay_edge_viewers{edge=\"us-",
    ] {
        assert!(text.contains(series), "no {series} in {text}");
    }
    assert_eq!(eu.metric("aethex_relay_upstream_connected"), 1.0);
    assert!(eu.metric("aethex_relay_upstream_received_bytes_total") > 10_000.0);

    // A killed edge says nothing; it leaves routing when its registration runs out (6 s TTL,
    // refreshed every 2 s) or when QUIC's idle timeout (5 s) ends its connection.
    let us_probe = format!("{at_origin}?region=us");
    assert_eq!(whep_probe(&us_probe, &[]).0, 307);
    us.kill();
    let gone = until(
        Duration::from_secs(15),
        || whep_probe(&us_probe, &[]).0,
        |s| *s != 307,
    )
    .expect("a killed edge leaves routing");
    eprintln!("killed edge left routing after {gone:?}");
    assert!(gone <= Duration::from_secs(7), "took {gone:?}");
    for server in [paris, eu, origin] {
        assert!(server.stop().success());
    }
}

/// `aethex channel <args> --data-dir DIR`, with the cluster secret of the tests, as JSON.

#[test]
fn a_private_channel_plays_at_an_edge_only_with_a_valid_token() {
    let dir = temp_dir("private-origin");
    let ch = create_channel(&dir, "vip");
    assert_eq!(channel_cli(&dir, &["private", "vip"])["private"], true);
    let token = channel_cli(&dir, &["token", "vip", "--ttl", "600"]);
    let token = token["token"].as_str().unwrap().to_string();
    let expired = channel_cli(&dir, &["token", "vip", "--ttl", "0"]);
    let expired = expired["token"].as_str().unwrap().to_string();

    let origin = Server::start(&dir, &["--relay-listen", "127.0.0.1:0"]);
    let edge = Server::start_edge(&temp_dir("private-edge"), origin.relay_addr(), "eu", &[]);
    let publisher = publisher(&origin, ch["stream_key"].as_str().unwrap(), "vp8", 12);
    std::thread::sleep(Duration::from_secs(2));

    let at_edge = format!("{}/whep/vip", edge.base);
    let bearer = |t: &str| format!("Bearer {t}");
    assert_eq!(whep_probe(&at_edge, &[]).0, 401, "no token at the edge");
    assert_eq!(whep_probe(&format!("{at_edge}?token=garbage"), &[]).0, 401);
    let expired_bearer = bearer(&expired);
    assert_eq!(
        whep_probe(&at_edge, &[("authorization", expired_bearer.as_str())]).0,
        401
    );
    assert_eq!(
        whep_probe(&format!("{}/whep/vip", origin.base), &[]).0,
        401,
        "no token at the origin"
    );
    // With the token (checked offline at the edge): it plays.
    let v = viewer_at(&at_edge, "token viewer", 6, &["--token", &token])
        .result(Duration::from_secs(40));
    eprintln!("viewer with token: {v}");
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["video_frames"].as_u64().unwrap() >= 30, "{v}");
    assert_eq!(publisher.result(Duration::from_secs(40))["ok"], true);
    for server in [edge, origin] {
        assert!(server.stop().success());
    }
}

#[test]
fn sigterm_drains_an_edge_its_viewer_finishes_and_new_viewers_go_upstream() {
    let dir = temp_dir("drain-origin");
    let ch = create_channel(&dir, "show");
    let origin = Server::start(&dir, &["--relay-listen", "127.0.0.1:0"]);
    let mut edge = Server::start_edge(&temp_dir("drain-edge"), origin.relay_addr(), "eu", &[]);
    let publisher = publisher(&origin, ch["stream_key"].as_str().unwrap(), "vp8", 16);
    std::thread::sleep(Duration::from_secs(2));
    let watching = viewer(&edge, "show", "edge viewer", 8);
    assert_eq!(
        edge.wait_metric("aethex_subscribers", 1.0, Duration::from_secs(10)),
        1.0
    );
    std::thread::sleep(Duration::from_secs(2));
    let routed = format!("{}/whep/show?region=eu", origin.base);
    assert_eq!(whep_probe(&routed, &[]).0, 307);

    let termed = Instant::now();
    edge.term();
    // New viewers at the edge are sent to its upstream...
    let at_edge = format!("{}/whep/show", edge.base);
    until(
        Duration::from_secs(3),
        || whep_probe(&at_edge, &[]),
        |(s, l)| *s == 307 && l.as_deref() == Some(&format!("{}/whep/show", origin.base)),
    )
    .expect("a draining edge redirects new viewers upstream");
    // ...and the origin stops routing viewers to it.
    let left = until(
        Duration::from_secs(3),
        || whep_probe(&routed, &[]).0,
        |s| *s != 307,
    )
    .expect("the origin stops routing to a draining edge");
    eprintln!("draining edge left routing after {left:?}");

    // The viewer that was there plays to its end; then the edge exits by itself.
    let r = watching.result(Duration::from_secs(30));
    eprintln!("viewer during drain: {r}");
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["video_frames"].as_u64().unwrap() >= 150, "{r}");
    let status = edge
        .wait_exit(Duration::from_secs(15))
        .expect("a drained edge exits");
    assert!(status.success());
    let drained = termed.elapsed();
    eprintln!("edge exited {drained:?} after SIGTERM");
    assert!(
        drained >= Duration::from_secs(3),
        "it waited for its viewer"
    );
    assert_eq!(publisher.result(Duration::from_secs(40))["ok"], true);
    assert!(origin.stop().success());
}

#[test]
fn an_origin_restart_heals_the_edge_and_its_viewer_continues_after_a_freeze() {
    let dir = temp_dir("heal-origin");
    let ch = create_channel(&dir, "show");
    let key = ch["stream_key"].as_str().unwrap().to_string();
    let origin = Server::start(&dir, &["--relay-listen", "127.0.0.1:0"]);
    let relay = origin.relay_addr();
    let edge = Server::start_edge(&temp_dir("heal-edge"), relay, "eu", &[]);
    let first = publisher(&origin, &key, "vp8", 30);
    std::thread::sleep(Duration::from_secs(2));
    let watching = viewer(&edge, "show", "edge viewer", 22);
    std::thread::sleep(Duration::from_secs(5));

    // The origin crashes and comes back on the same relay address; the creator reconnects.
    origin.kill();
    drop(first);
    std::thread::sleep(Duration::from_secs(1));
    let relay_arg = relay.to_string();
    let origin = Server::start(&dir, &["--relay-listen", &relay_arg]);
    let second = publisher(&origin, &key, "vp8", 14);
    let healed = until(
        Duration::from_secs(15),
        || edge.metric("aethex_relay_upstream_connected"),
        |v| *v == 1.0,
    );
    assert!(healed.is_some(), "the edge reconnected");

    let r = watching.result(Duration::from_secs(60));
    eprintln!("viewer across the origin restart: {r}");
    assert_eq!(r["ok"], true, "the viewer was never disconnected: {r}");
    // About 5 s of video before the crash; far more means it played on afterwards.
    assert!(r["video_frames"].as_u64().unwrap() >= 300, "{r}");
    assert!(
        r["max_video_gap_ms"].as_f64().unwrap() >= 500.0,
        "a freeze: {r}"
    );
    assert_eq!(second.result(Duration::from_secs(40))["ok"], true);
    for server in [edge, origin] {
        assert!(server.stop().success());
    }
}

#[test]
fn origins_sharing_redis_route_to_each_others_streams_and_edges() {
    let prefix = format!(
        "aethex-e2e-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let url =
        std::env::var("AETHEX_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let config = |dir: &std::path::Path, node: &str| {
        let path = dir.join("config.toml");
        let text = format!(
            "[relay]\nnode_id = \"{node}\"\n[cluster]\nredis_url = \"{url}\"\nredis_prefix = \"{prefix}\"\n"
        );
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let dir_a = temp_dir("redis-a");
    let ch = create_channel(&dir_a, "show");
    let config_a = config(&dir_a, "origin-a");
    let a = Server::start(
        &dir_a,
        &["--config", &config_a, "--relay-listen", "127.0.0.1:0"],
    );
    let dir_b = temp_dir("redis-b");
    let config_b = config(&dir_b, "origin-b");
    let b = Server::start(&dir_b, &["--config", &config_b]);
    let edge = Server::start_edge(&temp_dir("redis-edge"), a.relay_addr(), "eu", &[]);

    // B sees the edge A registered.
    let to_edge = until(
        Duration::from_secs(10),
        || whep_probe(&format!("{}/whep/demo?region=eu", b.base), &[]),
        |(s, l)| *s == 307 && l.as_deref().is_some_and(|l| l.starts_with(&edge.base)),
    );
    assert!(to_edge.is_some(), "origin B routes to origin A's edge");
    // A channel live at A is sent there from B.
    let publisher = publisher(&a, ch["stream_key"].as_str().unwrap(), "vp8", 30);
    let at_b = format!("{}/whep/show", b.base);
    let to_a = until(
        Duration::from_secs(10),
        || whep_probe(&at_b, &[]),
        |(s, l)| *s == 307 && l.as_deref() == Some(&format!("{}/whep/show", a.base)),
    );
    assert!(
        to_a.is_some(),
        "origin B sends viewers to the origin with the stream"
    );
    // A crashes: within the TTL its record is still there...
    assert!(edge.stop().success());
    a.kill();
    drop(publisher);
    assert_eq!(
        whep_probe(&at_b, &[]).0,
        307,
        "stale until the TTL or a restart"
    );
    // ...and its restart clears what it wrote before, at once, not after the TTL.
    let a = Server::start(&dir_a, &["--config", &config_a]);
    assert_eq!(
        whep_probe(&at_b, &[]).0,
        404,
        "nothing stale after the restart"
    );
    for server in [a, b] {
        assert!(server.stop().success());
    }
}
