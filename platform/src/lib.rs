//! AeThex LIVE platform API under `/api`: accounts and sessions, channels (metadata, stream
//! keys, live status), follows. Stored through the `storage` crate, so it runs on SQLite or
//! PostgreSQL unchanged; errors use the WHIP/WHEP JSON shape (`{"code", "error"}`).
//!
//! Chat over WebSocket (stored, moderated, fanned out across nodes through Redis) is in
//! [`chat`] and [`chat_hub`]; stream records, donations and webhooks (a transactional outbox
//! and a delivery worker) in [`streams`] and [`webhooks`]. API keys, tiers and quotas are in
//! [`quota`]. Analytics: recorded by [`analytics`] (viewer sessions, cluster-wide viewer
//! counts, samples), reported by [`analytics_report`]. The OpenAPI document of every route
//! (`GET /api/openapi.json`) is generated from the handlers' annotations: see [`openapi`].
//!
//! Each crate owns its tables: their migrations sit beside their queries. The platform's
//! (chat, streams, donations, webhooks, API keys, analytics, follow events: 0004 on) are in
//! `migrations/`, and [`migrate`] runs them on a [`Store`] once it is open (after storage's
//! own, 0001-0003, which also made the users, sessions and follows tables); `aethex::open_store`
//! does, and so must anything else that hands a store to the platform.
#![warn(missing_docs)]

mod access;
pub mod accounts;
pub mod analytics;
pub mod analytics_report;
pub mod channels;
pub mod chat;
pub mod chat_hub;
pub mod engagement;
pub mod follows;
mod json;
pub mod limits;
pub mod moderation;
pub mod openapi;
pub mod queue;
pub mod quota;
pub mod scoring;
pub mod search;
pub mod stage;
pub mod stage_controls;
pub mod streams;
pub mod trending;
pub mod viewer_sessions;
pub mod webhook_target;
pub mod webhooks;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use http_common::ApiError;
use storage::{Store, StoreError};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use json::{JsonBody, QueryParams};

/// Run the platform's migrations (`platform/migrations`) on `store`, which [`Store::open`] has
/// migrated to storage's; applied ones are skipped, so a reopened database costs a few
/// queries. Then the search index, which is each database's own ([`search::prepare`]).
/// Both migrators keep their versions in sqlx's `_sqlx_migrations`: each ignores the other's.
pub async fn migrate(store: &Store) -> Result<(), StoreError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(store.pool()).await?;
    search::prepare(store).await
}

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

/// What a [`LiveInfo`] action returns.
pub type LiveAction<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// One participant's presence on a stage, as the media side knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnStage {
    /// The guest's invite id; `None` for the host.
    pub invite: Option<String>,
    /// It publishes now.
    pub live: bool,
    /// It watches the others now.
    pub watching: bool,
    /// It speaks now (from the stage's mix).
    pub speaking: bool,
    /// One-section viewers see it now.
    pub featured: bool,
    /// Featured by the owner, not by the active speaker.
    pub pinned: bool,
    /// The owner muted it.
    pub muted: bool,
    /// The section pair a viewer joining now shows it on: 0 for the featured participant,
    /// then the others that publish, the host first; `None` while it does not publish.
    pub slot: Option<usize>,
}

/// What the owner asks of a live stage; a participant is `None` for the host, else a guest's
/// invite id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageControl {
    /// Feature this participant instead of the active speaker (`None` in the outer option:
    /// back to the active speaker).
    Feature(Option<Option<String>>),
    /// Mute (`true`) or unmute this participant: out of the mix and out of forwarding.
    Mute(Option<String>, bool),
}

/// What [`LiveInfo::stage`] returns: the host first, then the guests with a session.
pub type LiveStage<'a> = Pin<Box<dyn Future<Output = Vec<OnStage>> + Send + 'a>>;

/// The media side as the platform sees it (a fake in tests): live status, playback tokens,
/// and what changes to a channel do to its live sessions.
pub trait LiveInfo: Send + Sync + 'static {
    /// Every channel the media side knows, with its state.
    fn channels(&self) -> LiveChannels<'_>;
    /// Whether `token` is a valid playback token for `channel`.
    fn token_allows(&self, channel: &str, token: &str) -> bool;
    /// The channel's stream key changed: end its live publisher (it must come back with the
    /// new key).
    fn end_publisher<'a>(&'a self, channel: &'a str) -> LiveAction<'a>;
    /// The channel became private: close its viewers that joined without a playback token,
    /// here and at every edge.
    fn privatised<'a>(&'a self, channel: &'a str) -> LiveAction<'a>;
    /// Who is on `channel`'s stage: the host first, then each guest with a session (none
    /// where the media side keeps no stages, as at an edge).
    fn stage<'a>(&'a self, channel: &'a str) -> LiveStage<'a> {
        let _ = channel;
        Box::pin(async { Vec::new() })
    }
    /// The stage guest `invite` of `channel` was removed: end its publish and its watching
    /// session at once (nothing to end where the media side keeps no stages).
    fn end_guest<'a>(&'a self, channel: &'a str, invite: &'a str) -> LiveAction<'a> {
        let _ = (channel, invite);
        Box::pin(async {})
    }
    /// The owner's control of `channel`'s live stage (nothing where the media side keeps no
    /// stages).
    fn stage_control<'a>(&'a self, channel: &'a str, control: StageControl) -> LiveAction<'a> {
        let _ = (channel, control);
        Box::pin(async {})
    }
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
    /// Viewer counts of the other nodes (through Redis; empty on one node).
    pub board: Arc<analytics::ViewerBoard>,
    /// Limits and their state (password hashing, chat sockets, keys, webhooks).
    pub guards: Arc<limits::Guards>,
}

/// The `/api` routes, each registered together with its `#[utoipa::path]` description by
/// `routes!` (the method and path come from that description), so none is missing from
/// [`openapi::openapi`].
pub(crate) fn api_routes() -> OpenApiRouter<State> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(accounts::register))
        .routes(routes!(accounts::login, accounts::logout))
        .routes(routes!(accounts::me))
        .routes(routes!(follows::following))
        .routes(routes!(channels::create))
        .routes(routes!(channels::live_now))
        .routes(routes!(search::search))
        .routes(routes!(channels::get_channel, channels::patch_channel))
        .routes(routes!(channels::rotate_key))
        .routes(routes!(follows::follow, follows::unfollow))
        .routes(routes!(follows::followers))
        .routes(routes!(analytics_report::analytics))
        .routes(routes!(chat::socket))
        .routes(routes!(moderation::delete_message))
        .routes(routes!(queue::report))
        .routes(routes!(queue::list))
        .routes(routes!(queue::approve))
        .routes(routes!(queue::reject))
        .routes(routes!(queue::decisions))
        .routes(routes!(moderation::ban, moderation::unban))
        .routes(routes!(
            moderation::add_moderator,
            moderation::remove_moderator
        ))
        .routes(routes!(webhooks::create))
        .routes(routes!(webhooks::remove))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(streams::donate))
        .routes(routes!(streams::get_stream))
        .routes(routes!(quota::create, quota::list))
        .routes(routes!(quota::remove))
        .routes(routes!(stage::create_invite, stage::list_invites))
        .routes(routes!(stage::revoke_invite))
        .routes(routes!(stage::get_stage, stage_controls::end_stage))
        .routes(routes!(stage_controls::feature))
        .routes(routes!(stage_controls::mute))
        .routes(routes!(scoring::score))
        .routes(routes!(trending::platform))
        .routes(routes!(trending::channel))
        .routes(routes!(openapi::document))
}

/// The `/api` routes, `GET /api/openapi.json` among them.
pub fn router(state: State) -> Router {
    let quotas = axum::middleware::from_fn_with_state(state.clone(), quota::enforce);
    let (routes, _doc) = api_routes().split_for_parts();
    routes
        .layer(axum::extract::DefaultBodyLimit::max(json::MAX_BODY))
        .route_layer(quotas)
        .with_state(state)
}

/// What an edge relay (no database of the origin's) mounts at `/api`: every request answered
/// 403 `wrong_role` with `why` (where the platform API is).
pub fn refused_router(why: String) -> Router {
    let refuse = move || {
        let why = why.clone();
        async move { ApiError::WrongRole(why) }
    };
    Router::new()
        .route("/api", axum::routing::any(refuse.clone()))
        .route("/api/{*rest}", axum::routing::any(refuse))
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
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// At most this many items (1 to 100; default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Skip this many (default 0).
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

/// One page of a list.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Paged<T> {
    /// Items in the whole list.
    pub total: i64,
    /// This page of them.
    pub items: Vec<T>,
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
