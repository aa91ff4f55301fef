//! The platform router in-process over a real database, with a fixed media side: what the
//! API test files share.
#![allow(dead_code)] // each test binary uses a part

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use platform::analytics::ViewerBoard;
use platform::{LiveChannels, LiveInfo, LiveState, Settings, State};
use serde_json::{json, Value};
use storage::Store;
use tower::ServiceExt;

pub mod ws;

/// The media side, as a fixed list. Playback tokens `play-{channel}` are valid; the actions
/// the platform asks for are recorded (`end_publisher alice`, `privatised alice`).
pub struct FakeLive(
    pub Vec<(String, LiveState)>,
    pub Arc<std::sync::Mutex<Vec<String>>>,
);

impl LiveInfo for FakeLive {
    fn channels(&self) -> LiveChannels<'_> {
        Box::pin(async move { self.0.clone() })
    }
    fn token_allows(&self, channel: &str, token: &str) -> bool {
        token == format!("play-{channel}")
    }
    fn end_publisher<'a>(&'a self, channel: &'a str) -> platform::LiveAction<'a> {
        self.1
            .lock()
            .unwrap()
            .push(format!("end_publisher {channel}"));
        Box::pin(async {})
    }
    fn privatised<'a>(&'a self, channel: &'a str) -> platform::LiveAction<'a> {
        self.1.lock().unwrap().push(format!("privatised {channel}"));
        Box::pin(async {})
    }
}

/// The platform router, called in-process.
pub struct Api {
    pub app: axum::Router,
    /// What the platform asked the media side to do.
    pub actions: Arc<std::sync::Mutex<Vec<String>>>,
}

/// A live channel with `viewers`.
pub fn live(name: &str, viewers: u64) -> (String, LiveState) {
    (
        name.into(),
        LiveState {
            live: true,
            viewers,
        },
    )
}

impl Api {
    /// Channels alpha (3 viewers), beta (9) and gone (1) are live.
    pub fn new(store: Store) -> Self {
        Self::with(
            store,
            vec![live("alpha", 3), live("beta", 9), live("gone", 1)],
            platform::analytics::ViewerBoard::local("test"),
        )
    }

    /// The media side says `live`; other nodes' counts come from `board`.
    pub fn with(store: Store, live: Vec<(String, LiveState)>, board: ViewerBoard) -> Self {
        let actions = Arc::new(std::sync::Mutex::new(Vec::new()));
        let state = State {
            store,
            live: Arc::new(FakeLive(live, actions.clone())),
            settings: Arc::new(Settings {
                session_ttl_secs: 3600,
                public_url: "http://test".into(),
            }),
            chat: platform::chat_hub::ChatHub::local(),
            buckets: Default::default(),
            board: Arc::new(board),
            guards: Arc::default(),
        };
        Self {
            app: platform::router(state),
            actions,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.raw(req.body(body).unwrap()).await
    }

    pub async fn raw(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!("not JSON ({status}): {}", String::from_utf8_lossy(&bytes))
            })
        };
        (status, v)
    }

    /// Register `name` and return its session token.
    pub async fn user(&self, name: &str) -> String {
        let (s, v) = self
            .call(
                "POST",
                "/api/users",
                None,
                Some(json!({"name": name, "password": "correct horse"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    }
}
