//! Channel search on both databases (SQLite FTS5, PostgreSQL tsvector): every field is found,
//! words match as prefixes and all must match, the name and title rank above the description,
//! live channels come first, private ones never, edits are found at once, and no input gets
//! a 500.

mod common;

use axum::http::StatusCode;
use common::{live, Api};
use serde_json::{json, Value};
use storage::testing::TestDb;
use storage::Store;

/// A channel `name` owned by `token`'s user, with these fields.
async fn channel(api: &Api, token: &str, name: &str, fields: Value) {
    let (s, v) = api
        .call(
            "POST",
            "/api/channels",
            Some(token),
            Some(json!({"name": name})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let path = format!("/api/channels/{name}");
    let (s, v) = api.call("PATCH", &path, Some(token), Some(fields)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// The names `q` finds, in order.
async fn found(api: &Api, q: &str) -> Vec<String> {
    let (s, v) = api
        .call("GET", &format!("/api/search?q={q}"), None, None)
        .await;
    assert_eq!(s, StatusCode::OK, "{q}: {v}");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

async fn search_finds_every_field_ranks_and_puts_live_channels_first(store: Store, _db: &TestDb) {
    let board = platform::analytics::ViewerBoard::local("test");
    let api = Api::with(store, vec![live("puzzle-hour", 4)], board);
    let ada = api.user("ada").await;
    channel(
        &api,
        &ada,
        "speedrun-alpha",
        json!({"title": "Any% speedruns of Celeste", "category": "games"}),
    )
    .await;
    channel(
        &api,
        &ada,
        "chess-corner",
        json!({"title": "Rapid games", "description": "speed chess, openings and endgames",
               "category": "chess"}),
    )
    .await;
    channel(
        &api,
        &ada,
        "puzzle-hour",
        json!({"title": "Puzzles with chat", "description": "speedcubing on Sundays",
               "category": "puzzles"}),
    )
    .await;
    channel(
        &api,
        &ada,
        "secret-speed",
        json!({"title": "speed", "private": true}),
    )
    .await;

    // A prefix of a word in any field; the live channel first, then the name and title
    // matches above the description's; the private channel never.
    assert_eq!(
        found(&api, "speed").await,
        ["puzzle-hour", "speedrun-alpha", "chess-corner"]
    );
    assert_eq!(found(&api, "celeste").await, ["speedrun-alpha"]);
    assert_eq!(found(&api, "CHESS").await, ["chess-corner"]);
    assert_eq!(found(&api, "puzzles").await, ["puzzle-hour"]);
    // Every word must match.
    assert_eq!(found(&api, "speed%20chess").await, ["chess-corner"]);
    assert!(found(&api, "speed%20knitting").await.is_empty());
    // Edited: found under the new title at once, no longer under the old one.
    let (s, _) = api
        .call(
            "PATCH",
            "/api/channels/speedrun-alpha",
            Some(&ada),
            Some(json!({"title": "Knitting marathon"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(found(&api, "knitting").await, ["speedrun-alpha"]);
    assert!(found(&api, "celeste").await.is_empty());
    // Each result says who owns it and whether it is live.
    let (_, v) = api.call("GET", "/api/search?q=puzzle", None, None).await;
    assert_eq!(
        v["items"][0],
        json!({"name": "puzzle-hour", "title": "Puzzles with chat", "category": "puzzles",
               "owner": "ada", "live": true, "viewers": 4})
    );
    assert_eq!(v["words"], json!(["puzzle"]));
    // The limit holds.
    let (_, v) = api
        .call("GET", "/api/search?q=speed&limit=1", None, None)
        .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
}

async fn search_refuses_bad_queries_with_a_400_and_survives_any_text(store: Store, _db: &TestDb) {
    let api = Api::new(store);
    let ada = api.user("ada").await;
    channel(
        &api,
        &ada,
        "quotes",
        json!({"title": "\"quoted\" AND (weird) text*"}),
    )
    .await;
    for bad in [
        "/api/search",
        "/api/search?q=",
        "/api/search?q=%22%2A%28%29",
        "/api/search?q=x&limit=0",
        "/api/search?q=x&limit=51",
    ] {
        let (s, v) = api.call("GET", bad, None, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(v["error"].is_string(), "{bad}: {v}");
    }
    // Query syntax of either database is only separators here.
    for q in [
        "%22quoted%22%20AND",
        "weird)%20OR%20(text",
        "text*%20NEAR",
        "a%3A*%20%26%20!b",
        "%E6%9D%B1%E4%BA%AC",
        "%C4%B0stanbul",
    ] {
        let (s, v) = api
            .call("GET", &format!("/api/search?q={q}"), None, None)
            .await;
        assert_eq!(s, StatusCode::OK, "{q}: {v}");
    }
    assert_eq!(found(&api, "%22quoted%22%20AND").await, ["quotes"]);
}

storage::on_both_databases!(
    migrate = platform::migrate;
    search_finds_every_field_ranks_and_puts_live_channels_first,
    search_refuses_bad_queries_with_a_400_and_survives_any_text,
);
