//! Analytics on real databases (SQLite and the machine's PostgreSQL) and the real Redis: what a
//! node records (viewer sessions, samples), how a restarted node closes what it left open, the
//! cluster-wide viewer count through Redis, and the owner's report computed from stored rows.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::{live, Api};
use platform::analytics::{sample, Below, ViewerBoard};
use platform::viewer_sessions::{Recorder, Tracker};
use serde_json::{json, Value};
use storage::testing::TestDb;
use storage::Store;

/// A minute boundary, so chat minutes are easy to check.
const BASE: i64 = 1_700_000_040;

async fn channel_of(api: &Api, user: &str, channel: &str) -> String {
    let token = api.user(user).await;
    let (s, v) = api
        .call(
            "POST",
            "/api/channels",
            Some(&token),
            Some(json!({"name": channel})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    token
}

async fn exec(store: &Store, sql: &str) {
    sqlx::query(sql).execute(store.pool()).await.unwrap();
}

/// Sessions, samples, streams and chat as a node records them, at known times.
async fn recorded_history(store: &Store) {
    let b = BASE;
    exec(
        store,
        &format!(
            "INSERT INTO streams (id, channel, started_at, ended_at) VALUES \
         ('s1', 'show', {}, {}), ('s2', 'show', {}, {})",
            b - 300,
            b + 1000,
            b + 2900,
            b + 4100
        ),
    )
    .await;
    // (id, channel, stream, viewer, start, end)
    let sessions = [
        ("a", "show", "s1", "v1", b + 100, b + 700),   // 600 s
        ("b", "show", "s1", "v1", b + 800, b + 900),   // 100 s, same viewer
        ("c", "show", "s1", "v2", b - 200, b + 300),   // 300 s inside the range
        ("d", "show", "s2", "v3", b + 3000, b + 4000), // 600 s inside the range
        ("e", "other", "s9", "v4", b + 10, b + 20),    // another channel
        ("f", "show", "s0", "v5", b - 1000, b - 500),  // before the range
    ];
    for (id, channel, stream, viewer, start, end) in sessions {
        exec(
            store,
            &format!(
                "INSERT INTO viewer_sessions \
             (id, channel, stream_id, viewer, node_id, started_at, last_seen, ended_at) \
             VALUES ('{id}', '{channel}', '{stream}', '{viewer}', 'n1', {start}, {end}, {end})"
            ),
        )
        .await;
    }
    for (t, n) in [(0, 1), (10, 3), (20, 2), (3000, 5), (5000, 9)] {
        exec(
            store,
            &format!(
                "INSERT INTO viewer_samples (channel, t, viewers) VALUES ('show', {}, {n})",
                b + t
            ),
        )
        .await;
    }
    for (i, secs) in [61, 62, 119, 600, 3700].iter().enumerate() {
        exec(
            store,
            &format!(
                "INSERT INTO chat_messages (id, channel, user_id, user_name, body, sent_at_ms) \
             VALUES ('m{i}', 'show', 'u', 'ada', 'hi', {})",
                (b + secs) * 1000 + 5
            ),
        )
        .await;
    }
}

async fn the_owner_gets_watch_time_uniques_peak_chat_and_retention_for_a_range(
    store: Store,
    _db: &TestDb,
) {
    let api = Api::with(
        store.clone(),
        vec![live("show", 2)],
        ViewerBoard::local("n1"),
    );
    let token = channel_of(&api, "ada", "show").await;
    recorded_history(&store).await;
    let uri = format!(
        "/api/channels/show/analytics?from={BASE}&to={}",
        BASE + 3600
    );
    let (s, r) = api.call("GET", &uri, Some(&token), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["live_viewers"], 2);
    assert_eq!(
        (r["sessions"].as_u64(), r["unique_viewers"].as_u64()),
        (Some(4), Some(3))
    );
    assert_eq!(r["watch_time_secs"], 600 + 100 + 300 + 600);
    assert_eq!(
        (r["peak_viewers"].as_u64(), r["peak_at"].as_i64()),
        (Some(5), Some(BASE + 3000))
    );
    let points = |v: &Value| -> Vec<(i64, u64)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| (p["t"].as_i64().unwrap(), p["value"].as_u64().unwrap()))
            .collect()
    };
    assert_eq!(
        points(&r["retention"]),
        vec![(BASE, 1), (BASE + 10, 3), (BASE + 20, 2), (BASE + 3000, 5)]
    );
    assert_eq!(r["chat_messages"], 4);
    assert_eq!(
        points(&r["chat_per_minute"]),
        vec![(BASE + 60, 3), (BASE + 600, 1)]
    );
    let streams = r["streams"].as_array().unwrap();
    let per: Vec<(&str, u64, u64, u64, u64)> = streams
        .iter()
        .map(|s| {
            let n = |k: &str| s[k].as_u64().unwrap();
            (
                s["id"].as_str().unwrap(),
                n("sessions"),
                n("unique_viewers"),
                n("watch_time_secs"),
                n("peak_viewers"),
            )
        })
        .collect();
    assert_eq!(per, vec![("s1", 3, 2, 1000, 3), ("s2", 1, 1, 600, 5)]);
    // s1 in the range: 1,000 s live, 1,000 s watched (1 viewer on average), 2 viewers, 4
    // messages of one chatter with neutral sentiment: 0.24 messages a minute per viewer
    // (full), half the viewers chatted: 100 x (0.5 + 0.3 x 0.5 + 0.2 x 0.5) = 75. s2 has no
    // chat in the range.
    let engagement: Vec<(f64, f64, u64)> = streams
        .iter()
        .map(|s| {
            let e = &s["engagement"];
            (
                e["messages_per_minute_per_viewer"].as_f64().unwrap(),
                e["chatter_share"].as_f64().unwrap(),
                e["score"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(engagement, vec![(0.24, 0.5, 75), (0.0, 0.0, 0)]);
}

async fn analytics_are_for_the_owner_only_and_bad_ranges_are_json_400s(store: Store, _db: &TestDb) {
    let api = Api::with(store, vec![], ViewerBoard::local("n1"));
    let owner = channel_of(&api, "ada", "show").await;
    let other = api.user("bob").await;
    let at = "/api/channels/show/analytics";
    let code = |r: &(StatusCode, Value)| (r.0, r.1["code"].as_str().map(String::from));
    let (s, _) = api.call("GET", at, None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.call("GET", at, Some(&other), None).await.0,
        StatusCode::FORBIDDEN
    );
    let unknown = api
        .call("GET", "/api/channels/nope/analytics", Some(&owner), None)
        .await;
    assert_eq!(unknown.0, StatusCode::NOT_FOUND);
    for query in [
        "?from=10&to=5",
        "?from=abc",
        "?to=1.5",
        "?from=-3&to=9",
        "?from=0&to=99999999",
    ] {
        let r = api
            .call("GET", &format!("{at}{query}"), Some(&owner), None)
            .await;
        assert_eq!(code(&r).0, StatusCode::BAD_REQUEST, "{query}: {}", r.1);
        assert!(r.1["error"].is_string(), "{query}: {}", r.1);
    }
    // Defaults (the last day) on a channel with no history: zeros, not errors.
    let (s, r) = api.call("GET", at, Some(&owner), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        (r["sessions"].as_u64(), r["peak_at"].is_null()),
        (Some(0), true)
    );
    assert_eq!(
        r["to"].as_i64().unwrap() - r["from"].as_i64().unwrap(),
        86_400
    );
}

async fn open_count(store: &Store, node: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM viewer_sessions WHERE node_id = $1 AND ended_at IS NULL",
    )
    .bind(node)
    .fetch_one(store.pool())
    .await
    .unwrap();
    n
}

async fn a_node_records_viewer_sessions_and_closes_what_it_left_open_after_a_crash(
    store: Store,
    _db: &TestDb,
) {
    let api = Api::with(store.clone(), vec![], ViewerBoard::local("n1"));
    channel_of(&api, "ada", "show").await;
    let stream = platform::streams::started(&store, "show", "http://test")
        .await
        .unwrap()
        .unwrap();
    let n1 = Tracker::new(store.clone(), "n1", b"cluster secret");
    let n2 = Tracker::new(store.clone(), "n2", b"cluster secret");
    n1.joined(1, "show", "192.0.2.7\nFirefox").await.unwrap();
    n1.joined(1, "show", "192.0.2.7\nFirefox").await.unwrap(); // ICE restart: same session
    n1.joined(2, "show", "192.0.2.7\nFirefox").await.unwrap(); // a second tab
    n1.joined(3, "show", "198.51.100.1\nChrome").await.unwrap();
    n2.joined(1, "show", "192.0.2.7\nFirefox").await.unwrap(); // same viewer, other node
    n1.left(1).await.unwrap();
    n1.left(42).await.unwrap(); // never joined: nothing to do
    assert_eq!((n1.open_sessions(), open_count(&store, "n1").await), (2, 2));

    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT viewer, stream_id FROM viewer_sessions ORDER BY started_at, id")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), 4);
    assert!(rows
        .iter()
        .all(|(_, s)| s.as_deref() == Some(stream.as_str())));
    let distinct: std::collections::HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        distinct.len(),
        2,
        "one id per viewer across nodes: {rows:?}"
    );
    assert!(rows
        .iter()
        .all(|(v, _)| v.len() == 32 && !v.contains("192.0.2.7")));

    // n1 dies with two sessions open; restarted, it ends them where it last saw them, and
    // leaves n2's alone.
    drop(n1);
    let again = Tracker::new(store.clone(), "n1", b"cluster secret");
    assert_eq!(again.recover().await.unwrap(), 2);
    assert_eq!(
        (
            open_count(&store, "n1").await,
            open_count(&store, "n2").await
        ),
        (0, 1)
    );
    n2.finish().await.unwrap();
    assert_eq!(open_count(&store, "n2").await, 0);
}

async fn a_burst_of_viewers_is_recorded_in_order_in_the_background(store: Store, _db: &TestDb) {
    let tracker = Arc::new(Tracker::new(store.clone(), "n1", b"k"));
    let (recorder, writer) = Recorder::spawn(tracker.clone());
    // 1,000 viewers join (each twice, as after an ICE restart) and leave; peer 7 comes back.
    for peer in 0..1000u64 {
        let client = format!("192.0.2.{}\nagent", peer % 200);
        recorder.joined(peer, "show", &client);
        recorder.joined(peer, "show", &client);
    }
    for peer in 0..1000u64 {
        recorder.left(peer);
    }
    recorder.joined(7, "show", "192.0.2.7\nagent");
    drop(recorder);
    tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .expect("the writer drains its queue")
        .unwrap();
    let (rows, open, viewers): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) - COUNT(ended_at), COUNT(DISTINCT viewer) FROM viewer_sessions",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!((rows, open, viewers), (1001, 1, 200));
    assert_eq!(tracker.open_sessions(), 1);
}

async fn the_origin_samples_live_channels_and_an_edge_does_not(store: Store, _db: &TestDb) {
    let board = ViewerBoard::local("n1");
    let tracker = Tracker::new(store.clone(), "n1", b"k");
    let here = vec![
        live("show", 4),
        (
            "idle".to_string(),
            platform::LiveState {
                live: false,
                viewers: 0,
            },
        ),
    ];
    sample(&tracker, &board, &here, false, 5).await;
    sample(&tracker, &board, &here, true, 5).await;
    sample(&tracker, &board, &here, true, 5).await; // the same period: one row
    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT channel, t, viewers FROM viewer_samples")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1 % 5, rows[0].2),
        ("show", 0, 4)
    );
}

storage::on_both_databases!(
    migrate = platform::migrate;
    the_owner_gets_watch_time_uniques_peak_chat_and_retention_for_a_range,
    analytics_are_for_the_owner_only_and_bad_ranges_are_json_400s,
    a_node_records_viewer_sessions_and_closes_what_it_left_open_after_a_crash,
    the_origin_samples_live_channels_and_an_edge_does_not,
    a_burst_of_viewers_is_recorded_in_order_in_the_background,
);

fn redis_url() -> String {
    std::env::var("AETHEX_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Viewers below a node, as its edges report them.
fn below(pairs: &[(&str, u64)]) -> Arc<dyn Below> {
    Arc::new(counts(pairs))
}

fn counts(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn without_redis_a_node_counts_its_own_viewers_and_those_below_it() {
    let origin = ViewerBoard::local("o").with_below(below(&[("show", 5)]));
    assert_eq!((origin.total("show", 2), origin.total("other", 1)), (7, 1));
    let edge = ViewerBoard::local("e")
        .at_edge()
        .with_below(below(&[("show", 1)]));
    assert_eq!(edge.total("show", 3), 4);
}

#[tokio::test]
async fn viewer_counts_are_summed_across_origins_through_redis_and_a_dead_origin_expires() {
    let prefix = format!("aethex-test-{}", std::process::id());
    let board = |node: &'static str, ttl_ms: u64| {
        let prefix = prefix.clone();
        async move {
            ViewerBoard::redis(&redis_url(), &prefix, node, Duration::from_millis(ttl_ms))
                .await
                .expect("Redis at 127.0.0.1:6379 (or AETHEX_TEST_REDIS_URL)")
        }
    };
    // Origin a has 2 viewers at its edges; c will die; e is an edge below b.
    let a = board("a", 10_000).await.with_below(below(&[("show", 2)]));
    let b = board("b", 10_000).await.with_below(below(&[("show", 1)]));
    let c = board("c", 300).await;
    let e = board("e", 10_000).await.at_edge();
    a.publish(&counts(&[("show", 3)])).await;
    b.publish(&counts(&[("show", 4), ("other", 1)])).await;
    c.publish(&counts(&[("show", 10)])).await;
    a.publish(&counts(&[("show", 3)])).await;
    // Every origin's tree once: a 3+2, b 4+1, c 10.
    assert_eq!((a.total("show", 3), a.total("other", 0)), (20, 1));
    // The edge's viewer is in b's count already; the edge publishes nothing.
    e.publish(&counts(&[("show", 1)])).await;
    assert_eq!(e.total("show", 1), 20);
    b.publish(&counts(&[("show", 4), ("other", 1)])).await;
    assert_eq!(b.total("show", 4), 20);
    // c stops publishing: its counts expire; b leaves cleanly.
    tokio::time::sleep(Duration::from_millis(600)).await;
    b.withdraw().await;
    a.publish(&counts(&[("show", 3)])).await;
    assert_eq!((a.total("show", 3), a.total("other", 0)), (5, 0));
    a.withdraw().await;
}
