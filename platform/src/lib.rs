//! AeThex LIVE platform API under `/api`: accounts and sessions, channels (metadata, stream
//! keys, live status), follows. Stored through the `storage` crate, so it runs on SQLite or
//! PostgreSQL unchanged; errors use the WHIP/WHEP JSON shape (`{"code", "error"}`).
//!
//! Chat over WebSocket (stored, moderated, fanned out across nodes through Redis) is in
//! [`chat`] and [`chat_hub`]; stream records, donations and webhooks (a transactional outbox
//! and a delivery worker) in [`streams`] and [`webhooks`]. Not built yet (see the issue's
//! note): analytics, the OpenAPI document. API keys, tiers and quotas are in [`quota`].
#![warn(missing_docs)]

pub mod accounts;
pub mod channels;
pub mod chat;
pub mod chat_hub;
pub mod follows;
mod json;
pub mod quota;
pub mod streams;
pub mod webhooks;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::routing::{delete, get, post, put};
use axum::Router;
use signaling::ApiError;
use storage::Store;

pub use json::JsonBody;

/// What the media side says about a channel right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveState {
    /// A publisher is connected (or, at an edge, the upstream feeds it).
    pub live: bool,
    /// Viewers on this node.
    pub viewers: u64,
}

/// What [`LiveInfo::channels`] returns: every channel the media side knows, with its state.
pub type LiveChannels<'a> = Pin<Box<dyn Future<Output = Vec<(String, LiveState)>> + Send + 'a>>;

/// Live status of channels, from the SFU (a fake in tests).
pub trait LiveInfo: Send + Sync + 'static {
    /// Every channel the media side knows, with its state.
    fn channels(&self) -> LiveChannels<'_>;
}

/// Settings of the platform API.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A session lasts this long (seconds).
    pub session_ttl_secs: i64,
    /// Public base URL (for the WHIP URL printed with a new stream key).
    pub public_url: String,
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct State {
    /// The database.
    pub store: Store,
    /// Live status.
    pub live: Arc<dyn LiveInfo>,
    /// Settings.
    pub settings: Arc<Settings>,
    /// Chat fan-out (this node, or every node through Redis).
    pub chat: Arc<chat_hub::ChatHub>,
    /// Burst limits of API keys and client addresses (per node).
    pub buckets: Arc<quota::Buckets>,
}

/// The `/api` routes.
pub fn router(state: State) -> Router {
    let quotas = axum::middleware::from_fn_with_state(state.clone(), quota::enforce);
    Router::new()
        .route("/api/users", post(accounts::register))
        .route(
            "/api/sessions",
            post(accounts::login).delete(accounts::logout),
        )
        .route("/api/me", get(accounts::me))
        .route("/api/users/{name}/following", get(follows::following))
        .route("/api/channels", post(channels::create))
        .route("/api/live", get(channels::live_now))
        .route(
            "/api/channels/{name}",
            get(channels::get_channel).patch(channels::patch_channel),
        )
        .route(
            "/api/channels/{name}/stream-key",
            post(channels::rotate_key),
        )
        .route(
            "/api/channels/{name}/follow",
            put(follows::follow).delete(follows::unfollow),
        )
        .route("/api/channels/{name}/followers", get(follows::followers))
        .route("/api/channels/{name}/chat", get(chat::socket))
        .route(
            "/api/channels/{name}/chat/{id}",
            delete(chat::delete_message),
        )
        .route(
            "/api/channels/{name}/bans/{user}",
            put(chat::ban).delete(chat::unban),
        )
        .route(
            "/api/channels/{name}/moderators/{user}",
            put(chat::add_moderator).delete(chat::remove_moderator),
        )
        .route("/api/channels/{name}/webhooks", post(webhooks::create))
        .route("/api/webhooks/{id}", delete(webhooks::remove))
        .route("/api/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/api/channels/{name}/donations", post(streams::donate))
        .route("/api/streams/{id}", get(streams::get_stream))
        .route("/api/keys", post(quota::create).get(quota::list))
        .route("/api/keys/{id}", delete(quota::remove))
        .layer(axum::extract::DefaultBodyLimit::max(json::MAX_BODY))
        .route_layer(quotas)
        .with_state(state)
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A database error is a bug or an outage: 500 with the cause logged, never shown.
pub(crate) fn db(e: sqlx::Error) -> ApiError {
    ApiError::Internal(format!("database: {e}"))
}

/// `?limit=&offset=` for lists: limit 1..=100 (default 50).
#[derive(Debug, serde::Deserialize)]
pub struct Page {
    /// At most this many items.
    pub limit: Option<i64>,
    /// Skip this many.
    pub offset: Option<i64>,
}

impl Page {
    pub(crate) fn bounds(&self) -> Result<(i64, i64), ApiError> {
        let limit = self.limit.unwrap_or(50);
        let offset = self.offset.unwrap_or(0);
        if !(1..=100).contains(&limit) || offset < 0 {
            return Err(ApiError::BadRequest(
                "limit must be 1..=100 and offset >= 0".into(),
            ));
        }
        Ok((limit, offset))
    }
}
