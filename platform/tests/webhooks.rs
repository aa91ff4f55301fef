//! Webhooks on SQLite and PostgreSQL, delivered to a real HTTP receiver on loopback: signed,
//! retried with backoff, visible as deliveries; and an event accepted while no worker runs (the
//! node died) is delivered after a restart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use platform::webhooks::{signature, spawn_worker, WorkerConfig};
use platform::{Settings, State};
use serde_json::{json, Value};
use storage::testing::TestDb;
use storage::Store;
use tower::ServiceExt;

mod common;
use common::ws::NoLive;

/// The receivers here are on loopback: private destinations allowed, as on premises.
const FAST: WorkerConfig = WorkerConfig {
    poll: Duration::from_millis(50),
    backoff: Duration::from_millis(100),
    allow_private_networks: true,
};

/// A receiver that records what it gets and answers 500 to the first `fail` requests.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    fail: Arc<Mutex<u32>>,
}

async fn receiver(fail: u32) -> (String, Receiver) {
    let r = Receiver::default();
    *r.fail.lock().unwrap() = fail;
    let state = r.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let mut fail = state.fail.lock().unwrap();
                if *fail > 0 {
                    *fail -= 1;
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let text = String::from_utf8_lossy(&body).into_owned();
                state.got.lock().unwrap().push((headers, text));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, r)
}

impl Receiver {
    /// Wait (bounded) until `n` deliveries arrived.
    async fn wait(&self, n: usize) -> Vec<(HeaderMap, String)> {
        for _ in 0..100 {
            if self.got.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.got.lock().unwrap().clone()
    }
}

fn app(store: Store) -> axum::Router {
    platform::router(State {
        store,
        live: Arc::new(NoLive),
        settings: Arc::new(Settings {
            session_ttl_secs: 3600,
            public_url: "http://live.example".into(),
        }),
        chat: platform::chat_hub::ChatHub::local(),
        buckets: Default::default(),
        board: Arc::new(platform::analytics::ViewerBoard::local("test")),
        guards: Arc::new(platform::limits::Guards::new(
            platform::limits::Limits {
                webhooks_allow_private: true,
                ..Default::default()
            },
            None,
        )),
    })
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = axum::http::Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            axum::body::Body::from(v.to_string())
        }
        None => axum::body::Body::empty(),
    };
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn user(app: &axum::Router, name: &str) -> String {
    let (_, v) = call(
        app,
        "POST",
        "/api/users",
        None,
        Some(json!({"name": name, "password": "correct horse"})),
    )
    .await;
    v["token"].as_str().unwrap().to_string()
}

/// An owner with channel `show` and a webhook on it for `events`: (owner token, hook id, secret).
async fn hooked(
    app: &axum::Router,
    url: &str,
    events: Value,
    format: &str,
) -> (String, String, String) {
    let owner = user(app, "owner").await;
    call(
        app,
        "POST",
        "/api/channels",
        Some(&owner),
        Some(json!({"name": "show"})),
    )
    .await;
    let body = json!({"url": url, "events": events, "format": format});
    let (s, v) = call(
        app,
        "POST",
        "/api/channels/show/webhooks",
        Some(&owner),
        Some(body),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    (
        owner,
        v["id"].as_str().unwrap().into(),
        v["secret"].as_str().unwrap().into(),
    )
}

async fn follows_and_donations_are_delivered_signed(store: Store, _db: &TestDb) {
    let (url, rx) = receiver(0).await;
    let app = app(store.clone());
    let (_, _, secret) = hooked(&app, &url, json!(["follow", "donation"]), "json").await;
    let worker = spawn_worker(store, FAST);
    let fan = user(&app, "fan").await;
    call(&app, "PUT", "/api/channels/show/follow", Some(&fan), None).await;
    call(&app, "PUT", "/api/channels/show/follow", Some(&fan), None).await; // no second event
                                                                            // Nor when toggled: unfollow and follow again within hours.
    call(
        &app,
        "DELETE",
        "/api/channels/show/follow",
        Some(&fan),
        None,
    )
    .await;
    call(&app, "PUT", "/api/channels/show/follow", Some(&fan), None).await;
    let don = json!({"amount_cents": 500, "currency": "EUR", "message": "gg"});
    assert_eq!(
        call(
            &app,
            "POST",
            "/api/channels/show/donations",
            Some(&fan),
            Some(don)
        )
        .await
        .0,
        StatusCode::CREATED
    );
    let got = rx.wait(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rx.got.lock().unwrap().len(),
        2,
        "one follow event, one donation"
    );
    for (headers, body) in &got {
        let sig = headers["x-aethex-signature"].to_str().unwrap();
        let t: i64 = sig
            .split(',')
            .next()
            .unwrap()
            .trim_start_matches("t=")
            .parse()
            .unwrap();
        assert_eq!(
            sig,
            signature(&secret, t, body),
            "the receiver can verify it"
        );
    }
    let events: Vec<Value> = got
        .iter()
        .map(|(_, b)| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(events[0]["event"], "follow");
    assert_eq!(events[0]["data"]["user"], "fan");
    assert_eq!(events[1]["data"]["amount_cents"], 500);
    assert_eq!(
        events[1]["data"]["verified"], false,
        "no payment provider: a donation is unverified"
    );
    worker.abort();
}

async fn a_failing_receiver_is_retried_with_backoff_and_the_deliveries_show_it(
    store: Store,
    _db: &TestDb,
) {
    let (url, rx) = receiver(2).await;
    let app = app(store.clone());
    let (owner, hook, _) = hooked(&app, &url, json!(["stream.live"]), "discord").await;
    let worker = spawn_worker(store.clone(), FAST);
    let stream = platform::streams::started(&store, "show", "http://live.example")
        .await
        .unwrap()
        .unwrap();
    let got = rx.wait(1).await;
    assert_eq!(got.len(), 1);
    let body: Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(
        body,
        json!({"content": "**show** is live: http://live.example/watch/show"})
    );
    let (_, v) = call(
        &app,
        "GET",
        &format!("/api/webhooks/{hook}/deliveries"),
        Some(&owner),
        None,
    )
    .await;
    let d = &v["items"][0];
    assert_eq!(
        (
            d["state"].as_str(),
            d["attempts"].as_i64(),
            d["last_status"].as_i64()
        ),
        (Some("delivered"), Some(3), Some(204)),
        "{v}"
    );
    // The stream record.
    let (_, s) = call(&app, "GET", &format!("/api/streams/{stream}"), None, None).await;
    assert_eq!(
        (s["channel"].as_str(), s["live"].as_bool()),
        (Some("show"), Some(true))
    );
    platform::streams::ended(&store, "show", "http://live.example")
        .await
        .unwrap();
    let (_, s) = call(&app, "GET", &format!("/api/streams/{stream}"), None, None).await;
    assert_eq!(s["live"], false);
    // Someone else sees no deliveries, and bad registrations are refused.
    let other = user(&app, "other").await;
    assert_eq!(
        call(
            &app,
            "GET",
            &format!("/api/webhooks/{hook}/deliveries"),
            Some(&other),
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    for bad in [
        json!({"url": "ftp://x", "events": ["follow"]}),
        json!({"url": url, "events": ["nope"]}),
        json!({"url": url, "events": []}),
    ] {
        assert_eq!(
            call(
                &app,
                "POST",
                "/api/channels/show/webhooks",
                Some(&owner),
                Some(bad)
            )
            .await
            .0,
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(
        call(
            &app,
            "POST",
            "/api/channels/show/webhooks",
            Some(&other),
            Some(json!({"url": url, "events": ["follow"]}))
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    worker.abort();
}

async fn an_event_accepted_while_no_worker_runs_is_delivered_after_a_restart(
    store: Store,
    db: &TestDb,
) {
    let (url, rx) = receiver(0).await;
    let app = app(store.clone());
    hooked(&app, &url, json!(["follow"]), "json").await;
    let fan = user(&app, "fan").await;
    assert_eq!(
        call(&app, "PUT", "/api/channels/show/follow", Some(&fan), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    // The node dies before any worker ran: nothing was sent...
    store.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.got.lock().unwrap().is_empty());
    // ...and the restarted node delivers it.
    let worker = spawn_worker(db.open().await, FAST);
    let got = rx.wait(1).await;
    assert_eq!(got.len(), 1, "delivered after the restart");
    worker.abort();
}

storage::on_both_databases!(
    migrate = platform::migrate;
    follows_and_donations_are_delivered_signed,
    a_failing_receiver_is_retried_with_backoff_and_the_deliveries_show_it,
    an_event_accepted_while_no_worker_runs_is_delivered_after_a_restart,
);
