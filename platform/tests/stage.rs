//! Stage invites through the API on real databases (SQLite and PostgreSQL): only the owner
//! invites, lists and revokes; the token is shown once, admits its guest until revoked or
//! expired (the store's `invite_for_token`, what WHIP/WHEP will read), and survives a restart;
//! bad input is a 4xx JSON error.

mod common;

use axum::http::StatusCode;
use common::Api;
use serde_json::json;
use storage::testing::TestDb;
use storage::Store;

async fn channel_of(api: &Api, owner: &str, name: &str) {
    let (s, v) = api
        .call(
            "POST",
            "/api/channels",
            Some(owner),
            Some(json!({"name": name})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

async fn the_owner_invites_lists_and_revokes_and_tokens_survive_a_restart(
    store: Store,
    db: &TestDb,
) {
    let api = Api::new(store.clone());
    let (owner, other) = (api.user("host").await, api.user("stranger").await);
    channel_of(&api, &owner, "duo").await;
    let invites = "/api/channels/duo/stage/invites";
    let (s, v) = api
        .call(
            "POST",
            invites,
            Some(&owner),
            Some(json!({"name": "Guest Ann", "ttl_s": 600})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let token = v["token"].as_str().unwrap().to_string();
    let id = v["id"].as_str().unwrap().to_string();
    assert!(token.starts_with("si_"), "{v}");
    let join = v["join_url"].as_str().unwrap();
    assert!(
        join.ends_with(&format!("/stage/duo?invite={token}")),
        "{join}"
    );
    let expires = v["expires_at"].as_i64().unwrap();
    let invite = store.invite_for_token(&token).await.unwrap().unwrap();
    assert_eq!(
        (invite.channel.as_str(), invite.name.as_str()),
        ("duo", "Guest Ann")
    );
    assert_eq!(invite.expires_at, expires);
    assert_eq!(expires - invite.created_at, 600);

    // Defaults: a guest called "guest" for a day.
    let (s, v) = api
        .call("POST", invites, Some(&owner), Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let second = v["id"].as_str().unwrap().to_string();

    // The list never shows a token.
    let (s, v) = api.call("GET", invites, Some(&owner), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(!v.to_string().contains(&token));
    let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"guest") && names.contains(&"Guest Ann"),
        "{v}"
    );
    assert!(items.iter().all(|i| i["active"] == json!(true)));

    // Someone else may do none of it.
    for (method, path) in [
        ("POST", invites.to_string()),
        ("GET", invites.to_string()),
        ("DELETE", format!("{invites}/{id}")),
    ] {
        let body = (method == "POST").then(|| json!({}));
        let (s, v) = api.call(method, &path, Some(&other), body).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{method} {path}"
        );
        let (s, _) = api
            .call(method, &path, None, (method == "POST").then(|| json!({})))
            .await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a session"
        );
    }

    // A restart keeps the invites; revoking ends the first one only.
    store.close().await;
    let store = db.open().await;
    platform::migrate(&store).await.unwrap();
    let api = Api::new(store.clone());
    let owner = {
        let (s, v) = api
            .call(
                "POST",
                "/api/sessions",
                None,
                Some(json!({"name": "host", "password": "correct horse"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    };
    assert!(store.invite_for_token(&token).await.unwrap().is_some());
    let (s, _) = api
        .call("DELETE", &format!("{invites}/{id}"), Some(&owner), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(store.invite_for_token(&token).await.unwrap(), None);
    let (_, v) = api.call("GET", invites, Some(&owner), None).await;
    let revoked: Vec<&serde_json::Value> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["active"] == json!(false))
        .collect();
    assert_eq!(revoked.len(), 1, "{v}");
    assert_eq!(revoked[0]["id"], json!(id));
    assert!(revoked[0]["revoked_at"].is_i64());
    // Revoking an unknown invite, or the other one on another channel: 404.
    let (s, v) = api
        .call("DELETE", &format!("{invites}/nope"), Some(&owner), None)
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, _) = api
        .call(
            "DELETE",
            &format!("/api/channels/none/stage/invites/{second}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn bad_invites_get_a_4xx_json_error(store: Store, _db: &TestDb) {
    let api = Api::new(store);
    let owner = api.user("solo").await;
    channel_of(&api, &owner, "one").await;
    let invites = "/api/channels/one/stage/invites";
    for body in [
        json!({"ttl_s": 59}),
        json!({"ttl_s": 604_801}),
        json!({"name": ""}),
        json!({"name": "x".repeat(65)}),
        json!({"name": "tab\there"}),
        json!({"name": "ok", "extra": 1}),
        json!({"ttl_s": "soon"}),
    ] {
        let (s, v) = api
            .call("POST", invites, Some(&owner), Some(body.clone()))
            .await;
        assert!(s.is_client_error(), "{body}: {s}");
        assert!(
            v["code"].is_string() && v["error"].is_string(),
            "{body}: {v}"
        );
    }
    let (s, v) = api
        .call(
            "POST",
            "/api/channels/missing/stage/invites",
            Some(&owner),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

/// A guest going live and leaving writes `stage.joined` and `stage.left` to the outbox of
/// the webhooks that asked for them, with the guest's invite id and name.
async fn a_guest_joining_and_leaving_are_webhook_events(store: Store, _db: &TestDb) {
    let api = Api::new(store.clone());
    let owner = api.user("host").await;
    channel_of(&api, &owner, "duo").await;
    let (s, v) = api
        .call(
            "POST",
            "/api/channels/duo/webhooks",
            Some(&owner),
            Some(json!({"url": "https://example.com/hook", "events": ["stage.joined", "stage.left"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let new = store
        .create_invite("duo", "Ann", 600)
        .await
        .unwrap()
        .unwrap();
    let id = new.invite.id;
    let url = "http://live.example";
    platform::stage::guest_joined(&store, "duo", &id, url)
        .await
        .unwrap();
    platform::stage::guest_left(&store, "duo", &id, url)
        .await
        .unwrap();
    // An unknown guest (its channel deleted meanwhile) writes nothing.
    platform::stage::guest_left(&store, "duo", "nobody", url)
        .await
        .unwrap();
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT event, payload, created_at_ms FROM webhook_deliveries ORDER BY event",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let events: Vec<&str> = rows.iter().map(|(e, _, _)| e.as_str()).collect();
    assert_eq!(events, ["stage.joined", "stage.left"]);
    // Both may fall in one millisecond: the join is never after the leave.
    assert!(rows[0].2 <= rows[1].2, "{rows:?}");
    for (event, payload, _) in &rows {
        let p: serde_json::Value = serde_json::from_str(payload).unwrap();
        assert_eq!(p["event"], event.as_str());
        assert_eq!(p["channel"], "duo");
        assert_eq!(p["data"], json!({"guest": id, "name": "Ann"}));
    }
}

storage::on_both_databases!(
    migrate = platform::migrate;
    the_owner_invites_lists_and_revokes_and_tokens_survive_a_restart,
    bad_invites_get_a_4xx_json_error,
    a_guest_joining_and_leaving_are_webhook_events,
);
