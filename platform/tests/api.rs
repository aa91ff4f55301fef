//! The platform API on real databases, the same suite on SQLite (a temp file) and on the
//! machine's PostgreSQL (a fresh database per test): accounts, sessions, channels, follows, and
//! bad input everywhere answered with a 4xx JSON error, never a 500.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::Api;
use serde_json::json;
use storage::testing::TestDb;
use storage::Store;
use tower::ServiceExt;

async fn accounts_register_sign_in_and_out(store: Store, _db: &TestDb) {
    let api = Api::new(store);
    let token = api.user("ada").await;
    let (s, v) = api.call("GET", "/api/me", Some(&token), None).await;
    assert_eq!((s, v["name"].as_str()), (StatusCode::OK, Some("ada")));
    // Taken name, wrong password, unknown user: 409, 401, 401.
    let creds = |n: &str, p: &str| Some(json!({"name": n, "password": p}));
    assert_eq!(
        api.call("POST", "/api/users", None, creds("ada", "another password"))
            .await
            .0,
        StatusCode::CONFLICT
    );
    let (s, v) = api
        .call(
            "POST",
            "/api/sessions",
            None,
            creds("ada", "wrong password"),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    assert_eq!(
        api.call("POST", "/api/sessions", None, creds("nobody", "whatever1"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (s, v) = api
        .call("POST", "/api/sessions", None, creds("ada", "correct horse"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let second = v["token"].as_str().unwrap().to_string();
    // Signing out ends that session only.
    assert_eq!(
        api.call("DELETE", "/api/sessions", Some(&second), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.call("GET", "/api/me", Some(&second), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.call("GET", "/api/me", Some(&token), None).await.0,
        StatusCode::OK
    );
}

async fn an_expired_session_is_refused(store: Store, _db: &TestDb) {
    let api = Api::new(store.clone());
    let token = api.user("bo").await;
    sqlx::query("UPDATE sessions SET expires_at = 1")
        .execute(store.pool())
        .await
        .unwrap();
    let (s, v) = api.call("GET", "/api/me", Some(&token), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(v["error"].as_str().unwrap().contains("expired"), "{v}");
}

async fn only_the_owner_edits_a_channel_or_rotates_its_key(store: Store, _db: &TestDb) {
    let api = Api::new(store.clone());
    let (owner, other) = (api.user("cy").await, api.user("di").await);
    let (s, v) = api
        .call(
            "POST",
            "/api/channels",
            Some(&owner),
            Some(json!({"name": "alpha"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let key = v["stream_key"].as_str().unwrap().to_string();
    assert_eq!(
        store.channel_for_key(&key).await.unwrap().as_deref(),
        Some("alpha")
    );
    let patch = json!({"title": "Speedrun", "category": "games", "private": true});
    let (s, v) = api
        .call(
            "PATCH",
            "/api/channels/alpha",
            Some(&other),
            Some(patch.clone()),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (s, v) = api
        .call("PATCH", "/api/channels/alpha", Some(&owner), Some(patch))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["title"].as_str(), v["private"].as_bool()),
        (Some("Speedrun"), Some(true))
    );
    assert_eq!(
        store.is_private("alpha").await.unwrap(),
        Some(true),
        "the WHEP side sees it"
    );
    assert_eq!(
        api.actions.lock().unwrap().as_slice(),
        ["privatised alpha"],
        "viewers without a token are closed"
    );
    // Private: its live state and audience are shown only with a playback token or to its
    // owner (and moderators).
    let (_, v) = api.call("GET", "/api/channels/alpha", None, None).await;
    assert_eq!(
        v,
        json!({"name": "alpha", "title": "Speedrun", "description": "", "category": "games",
        "private": true, "slow_mode_secs": 0, "toxicity_action": "flag", "toxicity_threshold": 0.8,
        "owner": "cy", "followers": 0, "live": null, "viewers": null})
    );
    let (_, v) = api
        .call("GET", "/api/channels/alpha", Some(&other), None)
        .await;
    assert_eq!(
        (v["live"].clone(), v["viewers"].clone()),
        (json!(null), json!(null))
    );
    for (token, query) in [(None, "?playback=play-alpha"), (Some(&owner), "")] {
        let uri = format!("/api/channels/alpha{query}");
        let (_, v) = api.call("GET", &uri, token.map(|t| t.as_str()), None).await;
        assert_eq!(
            (v["live"].clone(), v["viewers"].clone()),
            (json!(true), json!(3))
        );
    }
    let (_, v) = api
        .call("GET", "/api/channels/alpha?playback=play-beta", None, None)
        .await;
    assert_eq!(
        v["live"],
        json!(null),
        "a token of another channel shows nothing"
    );
    assert_eq!(
        api.call("POST", "/api/channels/alpha/stream-key", Some(&other), None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let (s, v) = api
        .call("POST", "/api/channels/alpha/stream-key", Some(&owner), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        api.actions.lock().unwrap().last().map(String::as_str),
        Some("end_publisher alpha"),
        "the old key's publisher is ended"
    );
    assert_eq!(
        store.channel_for_key(&key).await.unwrap(),
        None,
        "the old key stops working"
    );
    assert!(store
        .channel_for_key(v["stream_key"].as_str().unwrap())
        .await
        .unwrap()
        .is_some());
    let (_, v) = api.call("GET", "/api/me", Some(&owner), None).await;
    assert_eq!(v["channels"], json!(["alpha"]));
}

async fn follows_are_idempotent_counted_listed_and_survive_a_restart(store: Store, db: &TestDb) {
    let api = Api::new(store.clone());
    let owner = api.user("ed").await;
    for name in ["alpha", "beta"] {
        api.call(
            "POST",
            "/api/channels",
            Some(&owner),
            Some(json!({"name": name})),
        )
        .await;
    }
    let fans: Vec<String> = ["f1", "f2", "f3"].iter().map(|n| n.to_string()).collect();
    let mut tokens = Vec::new();
    for f in &fans {
        tokens.push(api.user(f).await);
    }
    for t in &tokens {
        for _ in 0..2 {
            assert_eq!(
                api.call("PUT", "/api/channels/alpha/follow", Some(t), None)
                    .await
                    .0,
                StatusCode::NO_CONTENT
            );
        }
    }
    api.call("PUT", "/api/channels/beta/follow", Some(&tokens[0]), None)
        .await;
    assert_eq!(
        api.call(
            "DELETE",
            "/api/channels/alpha/follow",
            Some(&tokens[2]),
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.call(
            "DELETE",
            "/api/channels/alpha/follow",
            Some(&tokens[2]),
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    store.close().await;
    // After a restart: 2 followers of alpha, f1 follows two channels.
    let api = Api::new(db.open().await);
    let (_, v) = api
        .call("GET", "/api/channels/alpha/followers?limit=1", None, None)
        .await;
    assert_eq!(v["total"], 2);
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let (_, v) = api.call("GET", "/api/users/f1/following", None, None).await;
    assert_eq!(v["total"], 2);
    let (_, v) = api.call("GET", "/api/channels/alpha", None, None).await;
    assert_eq!(v["followers"], 2);
    assert_eq!(
        api.call("PUT", "/api/channels/nosuch/follow", Some(&tokens[0]), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call("PUT", "/api/channels/alpha/follow", None, None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
}

async fn live_now_is_sorted_by_viewers_and_hides_private_and_unknown_channels(
    store: Store,
    _db: &TestDb,
) {
    let api = Api::new(store);
    let owner = api.user("fi").await;
    for name in ["alpha", "beta"] {
        api.call(
            "POST",
            "/api/channels",
            Some(&owner),
            Some(json!({"name": name})),
        )
        .await;
    }
    let (s, v) = api.call("GET", "/api/live", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["beta", "alpha"], "{v}");
    api.call(
        "PATCH",
        "/api/channels/beta",
        Some(&owner),
        Some(json!({"private": true})),
    )
    .await;
    let (_, v) = api.call("GET", "/api/live", None, None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
}

async fn bad_input_gets_a_4xx_json_error_never_a_500(store: Store, _db: &TestDb) {
    let api = Api::new(store);
    let token = api.user("gi").await;
    let post = |uri: &str, ctype: &str, body: String| {
        Request::post(uri)
            .header("content-type", ctype)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(body))
            .unwrap()
    };
    let cases = [
        (
            post("/api/users", "application/json", "{not json".into()),
            StatusCode::BAD_REQUEST,
        ),
        (
            post(
                "/api/users",
                "application/json",
                r#"{"name": 5, "password": "x"}"#.into(),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            post(
                "/api/users",
                "application/json",
                r#"{"name": "NO SPACES", "password": "longenough"}"#.into(),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            post(
                "/api/users",
                "application/json",
                r#"{"name": "shorty", "password": "short"}"#.into(),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            post("/api/users", "text/plain", "{}".into()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            post(
                "/api/channels",
                "application/json",
                format!(r#"{{"name": "{}"}}"#, "x".repeat(100_000)),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            post(
                "/api/channels",
                "application/json",
                r#"{"name": "ok", "extra": 1}"#.into(),
            ),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (req, want) in cases {
        let uri = req.uri().to_string();
        let (s, v) = api.raw(req).await;
        assert_eq!(s, want, "{uri}: {v}");
        assert!(
            v["code"].is_string() && v["error"].is_string(),
            "{uri}: {v}"
        );
    }
    let (s, v) = api.call("GET", "/api/channels/nosuch", None, None).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, _) = api.call("GET", "/api/live?limit=1000", None, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = api.call("GET", "/api/me", Some("st_forged"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let too_long = json!({"title": "t".repeat(141)});
    api.call(
        "POST",
        "/api/channels",
        Some(&token),
        Some(json!({"name": "mine"})),
    )
    .await;
    let (s, _) = api
        .call("PATCH", "/api/channels/mine", Some(&token), Some(too_long))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

storage::on_both_databases!(
    migrate = platform::migrate;
    accounts_register_sign_in_and_out,
    an_expired_session_is_refused,
    only_the_owner_edits_a_channel_or_rotates_its_key,
    follows_are_idempotent_counted_listed_and_survive_a_restart,
    live_now_is_sorted_by_viewers_and_hides_private_and_unknown_channels,
    bad_input_gets_a_4xx_json_error_never_a_500,
    api_keys_have_tiers_daily_quotas_and_a_burst_limit,
);

async fn api_keys_have_tiers_daily_quotas_and_a_burst_limit(store: Store, db: &TestDb) {
    let api = Api::new(store.clone());
    let token = api.user("dev").await;
    let (s, k) = api.call("POST", "/api/keys", Some(&token), None).await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let (id, key) = (
        k["id"].as_str().unwrap().to_string(),
        k["key"].as_str().unwrap().to_string(),
    );
    let keyed = |method: &str, uri: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("x-api-key", &key)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap()
    };
    // A free key reads; it may not write.
    let resp = api
        .app
        .clone()
        .oneshot(keyed("GET", "/api/live"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-ratelimit-limit"], "10000");
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "9999");
    assert_eq!(
        api.raw(keyed("POST", "/api/channels")).await.0,
        StatusCode::FORBIDDEN
    );
    let unknown = Request::get("/api/live")
        .header("x-api-key", "ak_forged")
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.raw(unknown).await.0, StatusCode::UNAUTHORIZED);
    // The day's quota used up (counted in the database): 429 until midnight UTC.
    sqlx::query("UPDATE api_usage SET requests = 10000")
        .execute(store.pool())
        .await
        .unwrap();
    let resp = api
        .app
        .clone()
        .oneshot(keyed("GET", "/api/live"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
    let retry: i64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    // The count survives a restart; an enterprise key has no daily limit.
    store.close().await;
    let store = db.open().await;
    let api = Api::new(store.clone());
    assert_eq!(
        api.raw(keyed("GET", "/api/live")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    let tier = platform::quota::Tier::Enterprise;
    assert!(platform::quota::set_tier(&store, &id, tier).await.unwrap());
    let resp = api
        .app
        .clone()
        .oneshot(keyed("GET", "/api/live"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!resp.headers().contains_key("x-ratelimit-limit"));
    // The burst limit: about 40 at once (2 were spent above; the bucket refills at 20/s while
    // this runs), then 429 with Retry-After.
    let mut ok = 0;
    let limited = loop {
        let resp = api
            .app
            .clone()
            .oneshot(keyed("GET", "/api/live"))
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            break resp;
        }
        assert_eq!(resp.status(), StatusCode::OK);
        ok += 1;
        assert!(ok < 200, "no burst limit after 200 requests");
    };
    assert!(
        (38..=80).contains(&ok),
        "{ok} requests before the burst limit"
    );
    assert_eq!(limited.headers()["retry-after"], "1");
    let (_, v) = api.call("GET", "/api/keys", Some(&token), None).await;
    assert_eq!(v["items"][0]["tier"], "enterprise", "{v}");
    assert_eq!(
        api.call("DELETE", &format!("/api/keys/{id}"), Some(&token), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.raw(keyed("GET", "/api/live")).await.0,
        StatusCode::UNAUTHORIZED
    );
}
