//! The moderation queue over real WebSockets, on SQLite and PostgreSQL: a channel that holds
//! toxic messages keeps them from everyone but their author and its staff until a moderator
//! approves them; a viewer's report puts a message in the same queue; every decision is
//! recorded and survives a restart; `flag` marks a message for the staff only.
//!
//! What reaches a socket is checked without waiting for silence: after the event that must
//! not arrive, a plain message is sent, and the next event a socket gets must be that one
//! (a channel's events reach a socket in order).

use serde_json::{json, Value};
use storage::testing::TestDb;
use storage::Store;

mod common;
use common::ws::{call, connect, next, node, post, say, user, Ws};
use platform::chat_hub::ChatHub;

/// Scored offensive far above the thresholds below (checked through the scoring API first).
const RUDE: &str = "shut up you stupid bitch";
const THRESHOLD: f64 = 0.9;

/// `RUDE` scores at or above `THRESHOLD` with the built-in model.
async fn rude_is_over_the_threshold(base: &str) {
    let (s, v) = post(base, "/api/moderation/score", None, json!({"text": RUDE})).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        v["toxicity"]["score"].as_f64().unwrap() >= THRESHOLD,
        "the test's toxic message must score over {THRESHOLD}: {v}"
    );
}

/// A channel `room` owned by `host`, with `mod` its moderator and `fan`, `other` viewers;
/// their tokens in that order.
async fn room(base: &str, action: &str) -> [String; 4] {
    let owner = user(base, "host").await;
    let (modr, fan, other) = (
        user(base, "mod").await,
        user(base, "fan").await,
        user(base, "other").await,
    );
    post(base, "/api/channels", Some(&owner), json!({"name": "room"})).await;
    let (s, _) = call(
        base,
        "PUT",
        "/api/channels/room/moderators/mod",
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let patch = json!({"toxicity_action": action, "toxicity_threshold": THRESHOLD});
    let (s, v) = call(
        base,
        "PATCH",
        "/api/channels/room",
        Some(&owner),
        Some(patch),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (
            v["toxicity_action"].as_str(),
            v["toxicity_threshold"].as_f64()
        ),
        (Some(action), Some(THRESHOLD)),
        "{v}"
    );
    [owner, modr, fan, other]
}

/// A socket of `room` for `token` (anonymous without), past its history.
async fn joined(base: &str, token: Option<&str>) -> (Ws, Value) {
    let mut ws = connect(base, "room", token).await;
    let hello = next(&mut ws).await;
    assert_eq!(hello["type"], "history", "{hello}");
    (ws, hello)
}

fn bodies(history: &Value) -> Vec<(String, bool)> {
    history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["body"].as_str().unwrap().to_string(), m["held"] == true))
        .collect()
}

async fn hold_keeps_a_toxic_message_from_viewers_until_a_moderator_approves(
    store: Store,
    db: &TestDb,
) {
    let base = node(store, ChatHub::local()).await;
    rude_is_over_the_threshold(&base).await;
    let [owner, modr, fan, other] = room(&base, "hold").await;
    let (mut author, _) = joined(&base, Some(&fan)).await;
    let (mut viewer, _) = joined(&base, Some(&other)).await;
    let (mut anon, _) = joined(&base, None).await;
    let (mut moderator, _) = joined(&base, Some(&modr)).await;

    say(&mut author, RUDE).await;
    let held = next(&mut author).await;
    assert_eq!(
        (held["type"].as_str(), held["held"].as_bool()),
        (Some("message"), Some(true)),
        "{held}"
    );
    let id = held["id"].as_str().unwrap().to_string();
    let seen = next(&mut moderator).await;
    assert_eq!(
        (seen["id"].as_str(), seen["held"].as_bool()),
        (Some(id.as_str()), Some(true))
    );
    // Others get the next message, not the held one.
    say(&mut author, "gg everyone").await;
    for ws in [&mut viewer, &mut anon] {
        let ev = next(ws).await;
        assert_eq!(
            ev["body"], "gg everyone",
            "the held message reached a viewer: {ev}"
        );
        assert!(ev.get("held").is_none(), "{ev}");
    }
    next(&mut author).await;
    next(&mut moderator).await;
    // So does a socket joining now; the staff and the author see it held.
    let (_, h) = joined(&base, Some(&other)).await;
    assert_eq!(bodies(&h), [("gg everyone".to_string(), false)]);
    for token in [&fan, &modr, &owner] {
        let (_, h) = joined(&base, Some(token)).await;
        assert_eq!(
            bodies(&h),
            [(RUDE.into(), true), ("gg everyone".into(), false)]
        );
    }
    // The queue: for the staff only.
    let queue = "/api/channels/room/moderation/queue";
    assert_eq!(call(&base, "GET", queue, Some(&other), None).await.0, 403);
    assert_eq!(call(&base, "GET", queue, None, None).await.0, 401);
    let (s, q) = call(&base, "GET", queue, Some(&modr), None).await;
    assert_eq!(s, 200, "{q}");
    assert_eq!(q["total"], 1, "{q}");
    assert_eq!(
        (
            q["items"][0]["message"]["id"].as_str(),
            q["items"][0]["source"].as_str()
        ),
        (Some(id.as_str()), Some("held")),
        "{q}"
    );
    // A viewer cannot approve; a moderator does, once; everyone gets it, with its id.
    let approve = format!("{queue}/{id}/approve");
    assert_eq!(
        call(&base, "POST", &approve, Some(&other), None).await.0,
        403
    );
    let (s, d) = call(&base, "POST", &approve, Some(&modr), None).await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(
        (
            d["decision"].as_str(),
            d["source"].as_str(),
            d["by"].as_str()
        ),
        (Some("approved"), Some("held"), Some("mod"))
    );
    for ws in [&mut viewer, &mut anon, &mut author] {
        let ev = next(ws).await;
        assert_eq!(
            (ev["id"].as_str(), ev["body"].as_str()),
            (Some(id.as_str()), Some(RUDE)),
            "{ev}"
        );
        assert!(ev.get("held").is_none(), "{ev}");
    }
    assert_eq!(next(&mut moderator).await["id"], id.as_str());
    let decided = next(&mut moderator).await;
    assert_eq!(
        (decided["type"].as_str(), decided["decision"].as_str()),
        (Some("decided"), Some("approved")),
        "{decided}"
    );
    let (s, e) = call(&base, "POST", &approve, Some(&owner), None).await;
    assert_eq!((s, e["code"].as_str()), (409, Some("conflict")), "{e}");

    // Rejected: the author and the staff are told, nobody else ever sees it.
    say(&mut author, &format!("{RUDE} again")).await;
    let second = next(&mut author).await["id"].as_str().unwrap().to_string();
    next(&mut moderator).await;
    let (s, d) = call(
        &base,
        "POST",
        &format!("{queue}/{second}/reject"),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!((s, d["decision"].as_str()), (200, Some("rejected")), "{d}");
    for ws in [&mut author, &mut moderator] {
        let ev = next(ws).await;
        assert_eq!(
            (ev["type"].as_str(), ev["id"].as_str()),
            (Some("rejected"), Some(second.as_str())),
            "{ev}"
        );
    }
    say(&mut author, "sorry").await;
    assert_eq!(next(&mut viewer).await["body"], "sorry");
    // The owner's own message is never held.
    let (mut host, _) = joined(&base, Some(&owner)).await;
    say(&mut host, RUDE).await;
    let mine = next(&mut viewer).await;
    assert_eq!(
        (mine["user"].as_str(), mine["body"].as_str()),
        (Some("host"), Some(RUDE)),
        "{mine}"
    );

    // Recorded, and after a restart still there: the decisions, and what viewers see.
    let base2 = node(db.open().await, ChatHub::local()).await;
    let (s, log) = call(
        &base2,
        "GET",
        "/api/channels/room/moderation/decisions",
        Some(&modr),
        None,
    )
    .await;
    assert_eq!(s, 200, "{log}");
    let log: Vec<(&str, &str, &str, &str)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["message_id"].as_str().unwrap(),
                d["decision"].as_str().unwrap(),
                d["by"].as_str().unwrap(),
                d["toxicity"]["label"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(
        (log[0].0, log[0].1, log[0].2),
        (second.as_str(), "rejected", "host")
    );
    assert_eq!(
        (log[1].0, log[1].1, log[1].2),
        (id.as_str(), "approved", "mod")
    );
    assert!(log.iter().all(|d| d.3 != "neither"), "{log:?}");
    let (_, h) = joined(&base2, None).await;
    let shown: Vec<String> = bodies(&h).into_iter().map(|b| b.0).collect();
    assert_eq!(shown, [RUDE, "gg everyone", "sorry", RUDE]);
    let (s, q) = call(&base2, "GET", queue, Some(&modr), None).await;
    assert_eq!((s, &q["total"]), (200, &json!(0)), "{q}");
}

async fn a_reported_message_enters_the_queue_and_rejecting_it_deletes_it(
    store: Store,
    _db: &TestDb,
) {
    let base = node(store, ChatHub::local()).await;
    let [owner, _modr, fan, other] = room(&base, "off").await;
    let (mut author, _) = joined(&base, Some(&fan)).await;
    let (mut viewer, _) = joined(&base, Some(&other)).await;
    let (mut host, _) = joined(&base, Some(&owner)).await;
    say(&mut author, "buy followers at spam dot example").await;
    let id = next(&mut author).await["id"].as_str().unwrap().to_string();
    next(&mut viewer).await;
    next(&mut host).await;
    let report = format!("/api/channels/room/chat/{id}/report");
    // Signed in, not the author, a short reason, a message that is shown.
    let (s, _) = post(&base, &report, None, json!({})).await;
    assert_eq!(s, 401);
    let (s, e) = post(&base, &report, Some(&fan), json!({})).await;
    assert_eq!(s, 400, "{e}");
    let (s, _) = post(
        &base,
        &report,
        Some(&other),
        json!({"reason": "x".repeat(201)}),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = post(
        &base,
        "/api/channels/room/chat/m_nosuch/report",
        Some(&other),
        json!({}),
    )
    .await;
    assert_eq!(s, 404);
    let (s, r) = post(&base, &report, Some(&other), json!({"reason": "spam"})).await;
    assert_eq!((s, &r["reports"]), (201, &json!(1)), "{r}");
    let (s, r) = post(&base, &report, Some(&other), json!({"reason": "spam!"})).await;
    assert_eq!((s, &r["reports"]), (200, &json!(1)), "counted once: {r}");
    // The staff hear of it; the others do not.
    let ev = next(&mut host).await;
    assert_eq!(
        (
            ev["type"].as_str(),
            ev["id"].as_str(),
            ev["reports"].as_i64()
        ),
        (Some("reported"), Some(id.as_str()), Some(1)),
        "{ev}"
    );
    say(&mut host, "welcome").await;
    assert_eq!(next(&mut viewer).await["body"], "welcome");
    assert_eq!(next(&mut author).await["body"], "welcome");
    next(&mut host).await;
    let queue = "/api/channels/room/moderation/queue";
    let (_, q) = call(&base, "GET", queue, Some(&owner), None).await;
    assert_eq!(q["total"], 1, "{q}");
    let item = &q["items"][0];
    assert_eq!(
        (
            item["source"].as_str(),
            item["reports"][0]["user"].as_str(),
            item["reports"][0]["reason"].as_str()
        ),
        (Some("reported"), Some("other"), Some("spam")),
        "{q}"
    );
    // Rejected: deleted for everyone, out of the queue, recorded with its report count.
    let (s, d) = call(
        &base,
        "POST",
        &format!("{queue}/{id}/reject"),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(
        (s, d["source"].as_str(), d["reports"].as_i64()),
        (200, Some("reported"), Some(1)),
        "{d}"
    );
    for ws in [&mut viewer, &mut author, &mut host] {
        let ev = next(ws).await;
        assert_eq!(
            (ev["type"].as_str(), ev["id"].as_str()),
            (Some("deleted"), Some(id.as_str())),
            "{ev}"
        );
    }
    let (_, q) = call(&base, "GET", queue, Some(&owner), None).await;
    assert_eq!(q["total"], 0, "{q}");
    let (_, h) = joined(&base, None).await;
    assert_eq!(bodies(&h), [("welcome".to_string(), false)]);
    // Approved: it stays, its reports close, and the same viewer cannot bring it back.
    let welcome = h["messages"][0]["id"].as_str().unwrap().to_string();
    let report = format!("/api/channels/room/chat/{welcome}/report");
    assert_eq!(post(&base, &report, Some(&other), json!({})).await.0, 201);
    let (s, d) = call(
        &base,
        "POST",
        &format!("{queue}/{welcome}/approve"),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!((s, d["decision"].as_str()), (200, Some("approved")), "{d}");
    assert_eq!(post(&base, &report, Some(&other), json!({})).await.0, 200);
    let (_, q) = call(&base, "GET", queue, Some(&owner), None).await;
    assert_eq!(q["total"], 0, "{q}");
    let (_, log) = call(
        &base,
        "GET",
        "/api/channels/room/moderation/decisions",
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(log["total"], 2, "{log}");
    let (_, h) = joined(&base, None).await;
    assert_eq!(bodies(&h), [("welcome".to_string(), false)]);
}

async fn flag_marks_a_toxic_message_for_the_staff_only(store: Store, _db: &TestDb) {
    let base = node(store, ChatHub::local()).await;
    rude_is_over_the_threshold(&base).await;
    let [owner, modr, fan, other] = room(&base, "flag").await;
    let (mut viewer, _) = joined(&base, Some(&other)).await;
    let (mut moderator, _) = joined(&base, Some(&modr)).await;
    let (mut author, _) = joined(&base, Some(&fan)).await;
    say(&mut author, RUDE).await;
    say(&mut author, "nice play").await;
    for (ws, marked) in [
        (&mut viewer, false),
        (&mut author, false),
        (&mut moderator, true),
    ] {
        let ev = next(ws).await;
        assert_eq!(ev["body"], RUDE, "{ev}");
        assert_eq!(ev["flagged"] == true, marked, "{ev}");
        assert!(ev.get("held").is_none(), "{ev}");
        let ev = next(ws).await;
        assert_eq!(
            (ev["body"].as_str(), ev.get("flagged")),
            (Some("nice play"), None),
            "{ev}"
        );
    }
    let flags = |h: &Value| -> Vec<bool> {
        h["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["flagged"] == true)
            .collect()
    };
    assert_eq!(flags(&joined(&base, Some(&modr)).await.1), [true, false]);
    assert_eq!(flags(&joined(&base, Some(&other)).await.1), [false, false]);
    // Bad settings are refused.
    for bad in [
        json!({"toxicity_action": "block"}),
        json!({"toxicity_threshold": 0.0}),
        json!({"toxicity_threshold": 1.5}),
    ] {
        let (s, e) = call(
            &base,
            "PATCH",
            "/api/channels/room",
            Some(&owner),
            Some(bad),
        )
        .await;
        assert_eq!(s, 400, "{e}");
    }
}

storage::on_both_databases!(
    migrate = platform::migrate;
    hold_keeps_a_toxic_message_from_viewers_until_a_moderator_approves,
    a_reported_message_enters_the_queue_and_rejecting_it_deletes_it,
    flag_marks_a_toxic_message_for_the_staff_only,
);
