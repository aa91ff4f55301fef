//! Chat clients over real WebSockets (tokio-tungstenite) against the platform router served
//! on loopback: what the chat test files share.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use platform::chat_hub::ChatHub;
use platform::{LiveChannels, LiveInfo, Settings, State};
use serde_json::{json, Value};
use storage::Store;
use tokio_tungstenite::tungstenite::Message;

pub struct NoLive;

impl LiveInfo for NoLive {
    fn channels(&self) -> LiveChannels<'_> {
        Box::pin(async { Vec::new() })
    }
    fn token_allows(&self, _: &str, _: &str) -> bool {
        false
    }
    fn end_publisher<'a>(&'a self, _: &'a str) -> platform::LiveAction<'a> {
        Box::pin(async {})
    }
    fn privatised<'a>(&'a self, _: &'a str) -> platform::LiveAction<'a> {
        Box::pin(async {})
    }
}

/// A node: the platform router served on 127.0.0.1 with this store and hub.
pub async fn node(store: Store, chat: Arc<ChatHub>) -> String {
    let state = State {
        store,
        live: Arc::new(NoLive),
        settings: Arc::new(Settings {
            session_ttl_secs: 3600,
            public_url: "http://test".into(),
        }),
        chat,
        buckets: Default::default(),
        board: Arc::new(platform::analytics::ViewerBoard::local("test")),
        guards: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, platform::router(state)).await;
    });
    format!("127.0.0.1:{}", addr.port())
}

pub async fn post(base: &str, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    call(base, "POST", path, token, Some(body)).await
}

pub async fn call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().unwrap(), format!("http://{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let v = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, v)
}

pub async fn user(base: &str, name: &str) -> String {
    let (s, v) = post(
        base,
        "/api/users",
        None,
        json!({"name": name, "password": "correct horse"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    v["token"].as_str().unwrap().to_string()
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(base: &str, channel: &str, token: Option<&str>) -> Ws {
    let q = token.map(|t| format!("?token={t}")).unwrap_or_default();
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{base}/api/channels/{channel}/chat{q}"))
            .await
            .unwrap();
    ws
}

/// The next JSON event (bounded wait).
pub async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an event within 5 s")
            .expect("socket open")
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

pub async fn say(ws: &mut Ws, body: &str) {
    let frame = json!({"type": "send", "body": body}).to_string();
    ws.send(Message::text(frame)).await.unwrap();
}
