//! Chat over real WebSockets (tokio-tungstenite against the router served on loopback), on
//! SQLite and PostgreSQL: history on join, anonymous reading, signed-in writing, persistence,
//! moderation and limits; and two nodes sharing Redis, where a message sent on one reaches a
//! socket on the other.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use platform::chat_hub::ChatHub;
use serde_json::{json, Value};
use storage::testing::TestDb;
use storage::Store;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::ws::{call, connect, next, node, post, say, user};

async fn chat_is_stored_broadcast_and_replayed_on_join(store: Store, db: &TestDb) {
    let base = node(store, ChatHub::local()).await;
    let owner = user(&base, "host").await;
    post(
        &base,
        "/api/channels",
        Some(&owner),
        json!({"name": "room"}),
    )
    .await;
    let mut reader = connect(&base, "room", None).await;
    assert_eq!(
        next(&mut reader).await,
        json!({"type": "history", "messages": []})
    );
    let mut writer = connect(&base, "room", Some(&owner)).await;
    next(&mut writer).await;
    // Anonymous readers cannot write.
    say(&mut reader, "hi").await;
    assert_eq!(next(&mut reader).await["code"], "unauthorized");
    say(&mut writer, "  hello room  ").await;
    for ws in [&mut reader, &mut writer] {
        let ev = next(ws).await;
        assert_eq!(
            (
                ev["type"].as_str(),
                ev["user"].as_str(),
                ev["body"].as_str()
            ),
            (Some("message"), Some("host"), Some("hello room")),
            "{ev}"
        );
        assert!(
            ev["id"].as_str().unwrap().starts_with("m_") && ev["sent_at_ms"].as_i64().unwrap() > 0
        );
    }
    // Scored before the broadcast, and the scores are stored with it.
    say(&mut writer, "this stream is awesome").await;
    let praise = next(&mut reader).await;
    next(&mut writer).await;
    assert_eq!(praise["toxicity"]["label"], "neither", "{praise}");
    assert!(
        praise["toxicity"]["score"].as_f64().unwrap() < 0.5,
        "{praise}"
    );
    assert_eq!(praise["sentiment"]["label"], "positive", "{praise}");
    // A new node on the same database (a restart) replays it.
    let base2 = node(db.open().await, ChatHub::local()).await;
    let mut late = connect(&base2, "room", None).await;
    let hello = next(&mut late).await;
    assert_eq!(hello["messages"][0]["body"], "hello room", "{hello}");
    assert_eq!(
        (
            &hello["messages"][1]["toxicity"],
            &hello["messages"][1]["sentiment"]
        ),
        (&praise["toxicity"], &praise["sentiment"]),
        "{hello}"
    );
    // What the chat talks about: terms by the messages using them, stop words out.
    for path in ["/api/channels/room/trending", "/api/trending?minutes=5"] {
        let (s, t) = call(&base, "GET", path, None, None).await;
        assert_eq!(s, 200, "{t}");
        let terms: Vec<&str> = t["terms"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x["term"].as_str())
            .collect();
        assert!(
            ["awesome", "hello", "room", "stream"]
                .iter()
                .all(|w| terms.contains(w)),
            "{t}"
        );
        assert!(
            !terms.contains(&"this") && !terms.contains(&"is"),
            "stop words: {t}"
        );
    }
    let (s, _) = call(&base, "GET", "/api/trending?minutes=0", None, None).await;
    assert_eq!(s, 400);
    let (s, _) = call(&base, "GET", "/api/channels/nosuch/trending", None, None).await;
    assert_eq!(s, 404);
    // The scores a message would get, for bots: a label and a score each; bad text is a 400.
    let (s, v) = post(
        &base,
        "/api/moderation/score",
        None,
        json!({"text": "gg well played"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (
            v["toxicity"]["label"].as_str(),
            v["sentiment"]["label"].as_str()
        ),
        (Some("neither"), Some("positive")),
        "{v}"
    );
    for bad in [
        json!({"text": ""}),
        json!({"text": "x".repeat(501)}),
        json!({"txt": "hi"}),
    ] {
        let (s, v) = post(&base, "/api/moderation/score", None, bad).await;
        assert_eq!(s, 400, "{v}");
    }
    // Unknown channel: refused before the upgrade.
    let err =
        tokio_tungstenite::connect_async(format!("ws://{base}/api/channels/nosuch/chat")).await;
    assert!(err.is_err());
}

async fn moderation_bans_timeouts_deletes_slow_mode_and_blocked_terms(store: Store, _db: &TestDb) {
    let base = node(store, ChatHub::local()).await;
    let owner = user(&base, "host").await;
    let (fan, modr) = (user(&base, "fan").await, user(&base, "mod").await);
    post(
        &base,
        "/api/channels",
        Some(&owner),
        json!({"name": "room"}),
    )
    .await;
    let mut w = connect(&base, "room", Some(&fan)).await;
    next(&mut w).await;
    // A moderator (named by the owner) deletes a message: everyone sees `deleted`.
    assert_eq!(
        call(
            &base,
            "PUT",
            "/api/channels/room/moderators/mod",
            Some(&fan),
            None
        )
        .await
        .0,
        403
    );
    assert_eq!(
        call(
            &base,
            "PUT",
            "/api/channels/room/moderators/mod",
            Some(&owner),
            None
        )
        .await
        .0,
        204
    );
    say(&mut w, "first").await;
    let id = next(&mut w).await["id"].as_str().unwrap().to_string();
    assert_eq!(
        call(
            &base,
            "DELETE",
            &format!("/api/channels/room/chat/{id}"),
            Some(&fan),
            None
        )
        .await
        .0,
        403
    );
    assert_eq!(
        call(
            &base,
            "DELETE",
            &format!("/api/channels/room/chat/{id}"),
            Some(&modr),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(next(&mut w).await, json!({"type": "deleted", "id": id}));
    let mut fresh = connect(&base, "room", None).await;
    assert_eq!(
        next(&mut fresh).await["messages"],
        json!([]),
        "deleted messages are not replayed"
    );
    // Blocked terms (case-insensitive).
    let patch = json!({"blocked_terms": ["Spoiler"]});
    assert_eq!(
        call(
            &base,
            "PATCH",
            "/api/channels/room",
            Some(&owner),
            Some(patch)
        )
        .await
        .0,
        200
    );
    say(&mut w, "big SPOILER ahead").await;
    assert_eq!(next(&mut w).await["code"], "blocked_term");
    // Timeout, then ban, then unban.
    assert_eq!(
        call(
            &base,
            "PUT",
            "/api/channels/room/bans/fan",
            Some(&modr),
            Some(json!({"seconds": 60}))
        )
        .await
        .0,
        204
    );
    say(&mut w, "am I there").await;
    assert_eq!(next(&mut w).await["code"], "timed_out");
    assert_eq!(
        call(
            &base,
            "PUT",
            "/api/channels/room/bans/fan",
            Some(&owner),
            Some(json!({}))
        )
        .await
        .0,
        204
    );
    say(&mut w, "and now").await;
    assert_eq!(next(&mut w).await["code"], "banned");
    assert_eq!(
        call(
            &base,
            "DELETE",
            "/api/channels/room/bans/fan",
            Some(&owner),
            None
        )
        .await
        .0,
        204
    );
    // Slow mode: one message per 30 s per user.
    let slow = json!({"slow_mode_secs": 30});
    assert_eq!(
        call(
            &base,
            "PATCH",
            "/api/channels/room",
            Some(&owner),
            Some(slow)
        )
        .await
        .0,
        200
    );
    // The moderator has not written yet: one message, then slow mode.
    let mut m = connect(&base, "room", Some(&modr)).await;
    next(&mut m).await;
    say(&mut m, "one").await;
    assert_eq!(next(&mut m).await["body"], "one");
    say(&mut m, "two").await;
    assert_eq!(next(&mut m).await["code"], "slow_mode");
    assert_eq!(
        next(&mut w).await["body"],
        "one",
        "the fan saw the moderator's message"
    );
    // Bad frames and bad moderation input: errors, the socket stays.
    w.send(Message::text("not json")).await.unwrap();
    assert_eq!(next(&mut w).await["code"], "bad_request");
    say(&mut w, &"x".repeat(501)).await;
    assert_eq!(next(&mut w).await["code"], "bad_request");
    assert_eq!(
        call(
            &base,
            "PUT",
            "/api/channels/room/bans/nobody",
            Some(&owner),
            Some(json!({}))
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(
            &base,
            "PUT",
            "/api/channels/room/bans/fan",
            Some(&owner),
            Some(json!({"seconds": -5}))
        )
        .await
        .0,
        400
    );
}

async fn a_user_is_rate_limited_after_a_burst(store: Store, _db: &TestDb) {
    let base = node(store, ChatHub::local()).await;
    let owner = user(&base, "host").await;
    post(
        &base,
        "/api/channels",
        Some(&owner),
        json!({"name": "room"}),
    )
    .await;
    let mut w = connect(&base, "room", Some(&owner)).await;
    next(&mut w).await;
    let mut codes = Vec::new();
    for i in 0..7 {
        say(&mut w, &format!("m{i}")).await;
        let ev = next(&mut w).await;
        codes.push(ev["code"].as_str().unwrap_or("ok").to_string());
    }
    assert_eq!(
        codes,
        ["ok", "ok", "ok", "ok", "ok", "rate_limited", "rate_limited"]
    );
}

storage::on_both_databases!(
    migrate = platform::migrate;
    chat_is_stored_broadcast_and_replayed_on_join,
    moderation_bans_timeouts_deletes_slow_mode_and_blocked_terms,
    a_user_is_rate_limited_after_a_burst,
);

#[tokio::test]
async fn a_message_sent_on_one_node_reaches_a_socket_on_another_through_redis() {
    let db = TestDb::postgres().await;
    let url =
        std::env::var("AETHEX_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("aethex-chat-test-{}", std::process::id());
    let hub = |_: ()| ChatHub::redis(&url, &prefix);
    let store = db.open().await;
    platform::migrate(&store)
        .await
        .expect("platform migrations");
    let a = node(store, hub(()).await.expect("Redis at 127.0.0.1:6379")).await;
    let b = node(db.open().await, hub(()).await.unwrap()).await;
    let owner = user(&a, "host").await;
    post(&a, "/api/channels", Some(&owner), json!({"name": "room"})).await;
    let mut on_b = connect(&b, "room", None).await;
    next(&mut on_b).await;
    let mut on_a = connect(&a, "room", Some(&owner)).await;
    next(&mut on_a).await;
    // The subscriber of node B may still be starting: retry (bounded) until it delivers.
    let mut got = None;
    for i in 0..20 {
        say(&mut on_a, &format!("across {i}")).await;
        next(&mut on_a).await;
        if let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(250), on_b.next()).await
        {
            got = Some(serde_json::from_str::<Value>(t.as_str()).unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await; // the rate limit refills
    }
    let ev = got.expect("node B's socket got node A's message");
    assert_eq!(
        (ev["type"].as_str(), ev["user"].as_str()),
        (Some("message"), Some("host")),
        "{ev}"
    );
    // An event's audience crosses nodes too: a held message reaches the owner's socket on B,
    // and B's anonymous socket gets the next message instead.
    let patch = json!({"toxicity_action": "hold", "toxicity_threshold": 0.9});
    let (s, v) = call(&a, "PATCH", "/api/channels/room", Some(&owner), Some(patch)).await;
    assert_eq!(s, 200, "{v}");
    let mut host_on_b = connect(&b, "room", Some(&owner)).await;
    next(&mut host_on_b).await;
    let fan = user(&a, "fan").await;
    let mut fan_on_a = connect(&a, "room", Some(&fan)).await;
    next(&mut fan_on_a).await;
    say(&mut fan_on_a, "shut up you stupid bitch").await;
    let held = next(&mut host_on_b).await;
    assert_eq!(held["held"], true, "{held}");
    tokio::time::sleep(Duration::from_millis(1100)).await; // the rate limit refills
    say(&mut on_a, "after the held one").await;
    let mut seen = next(&mut on_b).await;
    while seen["body"]
        .as_str()
        .is_some_and(|b| b.starts_with("across"))
    {
        seen = next(&mut on_b).await; // retries of the loop above that B got late
    }
    assert_eq!(seen["body"], "after the held one", "{seen}");
}
