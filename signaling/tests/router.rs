//! The HTTP layer against a fake media engine: no ports, no media. Proves the mapping from
//! engine results to WHIP/WHEP responses, and that session resources follow the engine.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use sfu::{PeerId, Published, SfuError, SfuStats, StreamId, Subscribed};
use signaling::{router, AppState, HttpSettings, Metrics, Sessions, SfuControl, Store};
use tower::ServiceExt;

/// Answers every call with a canned result and records what it was asked.
#[derive(Clone, Default)]
struct FakeSfu {
    subscribe_error: Arc<Mutex<Option<SfuError>>>,
    closed: Arc<Mutex<Vec<PeerId>>>,
}

impl SfuControl for FakeSfu {
    async fn publish(&self, _stream: StreamId, _offer: String) -> Result<Published, SfuError> {
        Ok(Published {
            peer: PeerId(7),
            answer: "v=0\r\n".into(),
            replaced: None,
        })
    }
    async fn subscribe(&self, _stream: StreamId, _offer: String) -> Result<Subscribed, SfuError> {
        match self.subscribe_error.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(Subscribed {
                peer: PeerId(8),
                answer: "v=0\r\n".into(),
            }),
        }
    }
    async fn trickle(&self, _peer: PeerId, candidates: Vec<String>) -> Result<usize, SfuError> {
        Ok(candidates.len())
    }
    async fn close(&self, peer: PeerId) -> Result<(), SfuError> {
        self.closed.lock().unwrap().push(peer);
        Ok(())
    }
    async fn stats(&self) -> Result<SfuStats, SfuError> {
        Ok(SfuStats::default())
    }
}

async fn app(fake: FakeSfu) -> (axum::Router, Arc<Sessions>) {
    let store = Store::open("sqlite::memory:").await.unwrap();
    store.create_channel("demo").await.unwrap();
    let sessions = Arc::new(Sessions::default());
    let state = AppState {
        sfu: fake,
        store,
        sessions: sessions.clone(),
        settings: Arc::new(HttpSettings {
            max_body_bytes: 64 * 1024,
            ice_servers: vec![],
        }),
        metrics: Arc::new(Metrics::new()),
    };
    (router(state), sessions)
}

fn whep(channel: &str) -> Request<Body> {
    Request::post(format!("/whep/{channel}"))
        .header("content-type", "application/sdp")
        .body(Body::from("v=0\r\n"))
        .unwrap()
}

async fn code_of(resp: axum::response::Response) -> String {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["code"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn engine_errors_map_to_stable_statuses_and_codes() {
    let cases = [
        (
            SfuError::Offline(StreamId::new("demo").unwrap()),
            StatusCode::NOT_FOUND,
            "offline",
        ),
        (SfuError::Full(10), StatusCode::SERVICE_UNAVAILABLE, "full"),
        (
            SfuError::BadOffer("x".into()),
            StatusCode::BAD_REQUEST,
            "bad_sdp",
        ),
        (
            SfuError::CodecMismatch("x".into()),
            StatusCode::BAD_REQUEST,
            "codec_mismatch",
        ),
        (
            SfuError::Unavailable,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        ),
    ];
    for (err, status, code) in cases {
        let fake = FakeSfu::default();
        *fake.subscribe_error.lock().unwrap() = Some(err);
        let (app, sessions) = app(fake).await;
        let resp = app.oneshot(whep("demo")).await.unwrap();
        assert_eq!(resp.status(), status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(resp.headers().contains_key("retry-after"));
        }
        assert_eq!(code_of(resp).await, code);
        assert!(sessions.is_empty(), "a failed subscribe leaves no resource");
    }
}

#[tokio::test]
async fn delete_closes_the_engine_session_and_forgets_the_resource() {
    let fake = FakeSfu::default();
    let (app, sessions) = app(fake.clone()).await;
    let resp = app.clone().oneshot(whep("demo")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(sessions.len(), 1);
    let del = Request::delete(&location).body(Body::empty()).unwrap();
    assert_eq!(
        app.clone().oneshot(del).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(*fake.closed.lock().unwrap(), vec![PeerId(8)]);
    assert!(sessions.is_empty());
    // A WHEP resource is not reachable under /whip.
    let wrong = location.replacen("/whep/", "/whip/", 1);
    let resp = app
        .oneshot(Request::delete(wrong).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn engine_closing_a_peer_forgets_its_resource() {
    let (app, sessions) = app(FakeSfu::default()).await;
    let resp = app.oneshot(whep("demo")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    sessions.forget_peer(PeerId(8));
    assert!(sessions.is_empty());
}
