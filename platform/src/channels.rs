//! Channels: create (signed in), read (anyone), edit and rotate the stream key (the owner), and
//! the channels live now.

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_common::ApiError;
use serde::{Deserialize, Serialize};
use storage::StoreError;
use utoipa::ToSchema;

use crate::access::{may_see_private, PlaybackQuery};
use crate::accounts::{valid_name, User};
use crate::openapi::{
    BadPage, BodyRejected, ChannelPath, ErrorBody, NoSuchChannel, NotOwner, Unauthorized,
};
use crate::queue::ToxicityAction;
use crate::{db, JsonBody, LiveState, Page, Paged, QueryParams, State};

/// A channel as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelOut {
    /// Channel name.
    name: String,
    /// Title (at most 140 characters).
    title: String,
    /// Description (at most 2000 characters).
    description: String,
    /// Category (at most 64 characters).
    category: String,
    /// Private: hidden from `GET /api/live`; viewers need a playback token; its live state,
    /// viewer count and chat are shown only with one, or to its owner and moderators.
    private: bool,
    /// Seconds a chatter waits between messages (0: off).
    slow_mode_secs: i64,
    /// What a chat message the toxicity model scores at or above `toxicity_threshold` gets
    /// (docs/moderation.md): `off`, `flag` (marked for moderators) or `hold` (waits in the
    /// moderation queue).
    toxicity_action: ToxicityAction,
    /// The toxicity score (0 to 1) from which `toxicity_action` applies.
    toxicity_threshold: f64,
    /// Name of the owner (null for a channel made by the operator).
    #[schema(required = true)]
    owner: Option<String>,
    /// Number of followers.
    followers: i64,
    /// Someone is publishing now (null: a private channel, without access).
    #[schema(required = true)]
    live: Option<bool>,
    /// Viewers now (null: a private channel, without access).
    #[schema(required = true)]
    viewers: Option<u64>,
}

/// `POST /api/channels` answer.
#[derive(Serialize, ToSchema)]
struct NewChannelOut {
    /// Channel name.
    channel: String,
    /// The stream key (WHIP bearer token). Shown once.
    stream_key: String,
    /// Where to publish (WHIP).
    whip_url: String,
    /// Where to watch.
    watch_url: String,
}

/// `POST /api/channels/{name}/stream-key` answer.
#[derive(Serialize, ToSchema)]
struct StreamKeyOut {
    /// Channel name.
    channel: String,
    /// The new stream key. Shown once.
    stream_key: String,
}

type Row = (
    String,
    String,
    String,
    String,
    i64,
    i64,
    String,
    f64,
    Option<String>,
    i64,
);

const SELECT: &str = "SELECT c.name, c.title, c.description, c.category, c.private, \
     c.slow_mode_secs, c.toxicity_action, c.toxicity_threshold, u.name, \
     (SELECT COUNT(*) FROM follows f WHERE f.channel = c.name) \
     FROM channels c LEFT JOIN users u ON u.id = c.owner_id WHERE c.name = $1";

/// A channel's live state, its viewers counted over every node (this node's count is exact
/// now; its edges' as of their last load report; other origins' as of their last publish to
/// Redis).
async fn live_state(st: &State, name: &str) -> LiveState {
    let mut state = st
        .live
        .channels()
        .await
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s)
        .unwrap_or_default();
    state.viewers = st.board.total(name, state.viewers);
    state
}

/// The channel; a private one's live state only when `reveal` (the caller may see it).
async fn load(st: &State, name: &str, reveal: bool) -> Result<ChannelOut, ApiError> {
    let row: Option<Row> = sqlx::query_as(SELECT)
        .bind(name)
        .fetch_optional(st.store.pool())
        .await
        .map_err(db)?;
    let (
        name,
        title,
        description,
        category,
        private,
        slow_mode_secs,
        action,
        toxicity_threshold,
        owner,
        followers,
    ) = row.ok_or_else(|| ApiError::NotFound(format!("no such channel: {name}")))?;
    let shown = private == 0 || reveal;
    let live = if shown {
        live_state(st, &name).await
    } else {
        LiveState::default()
    };
    Ok(ChannelOut {
        name,
        title,
        description,
        category,
        private: private != 0,
        slow_mode_secs,
        toxicity_action: ToxicityAction::parse(&action).unwrap_or(ToxicityAction::Flag),
        toxicity_threshold,
        owner,
        followers,
        live: shown.then_some(live.live),
        viewers: shown.then_some(live.viewers),
    })
}

/// The channel, if `user` owns it: 404 when there is none, 403 when someone else does.
pub(crate) async fn owned(st: &State, name: &str, user: &User) -> Result<(), ApiError> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT owner_id FROM channels WHERE name = $1")
            .bind(name)
            .fetch_optional(st.store.pool())
            .await
            .map_err(db)?;
    match row {
        None => Err(ApiError::NotFound(format!("no such channel: {name}"))),
        Some((Some(owner),)) if owner == user.id => Ok(()),
        Some(_) => Err(ApiError::Forbidden("only the channel's owner may do this")),
    }
}

/// `POST /api/channels {name}` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChannel {
    /// Channel name: 1-32 of `a-z 0-9 - _`.
    #[schema(pattern = "^[a-z0-9_-]{1,32}$")]
    name: String,
}

/// `POST /api/channels`: create a channel owned by the signed-in user; its stream key is in the
/// answer, once.
#[utoipa::path(
    post,
    path = "/api/channels",
    tag = "channels",
    operation_id = "create_channel",
    request_body = NewChannel,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; the stream key is shown once", body = NewChannelOut),
        (status = 400, description = "Malformed JSON or a bad name", body = ErrorBody),
        Unauthorized,
        (status = 409, description = "The channel exists", body = ErrorBody),
        BodyRejected,
    )
)]
pub async fn create(
    AxState(st): AxState<State>,
    user: User,
    JsonBody(c): JsonBody<NewChannel>,
) -> Result<Response, ApiError> {
    if !valid_name(&c.name) {
        return Err(ApiError::BadRequest(
            "name: 1-32 characters of a-z, 0-9, '-' and '_'".into(),
        ));
    }
    let key = match st.store.create_channel_for(&c.name, Some(&user.id)).await {
        Ok(k) => k,
        Err(StoreError::Exists(n)) => {
            return Err(ApiError::Conflict(format!("channel {n} already exists")))
        }
        Err(e) => return Err(ApiError::Internal(e.to_string())),
    };
    let base = st.settings.public_url.trim_end_matches('/');
    let body = NewChannelOut {
        stream_key: key.expose().to_string(),
        whip_url: format!("{base}/whip"),
        watch_url: format!("{base}/watch/{}", c.name),
        channel: c.name,
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// `GET /api/channels/{name}`.
#[utoipa::path(
    get,
    path = "/api/channels/{name}",
    tag = "channels",
    params(ChannelPath, PlaybackQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The channel (a private one's live state and viewers are \
            null without a playback token, or for anyone but its owner and moderators)",
            body = ChannelOut),
        (status = 400, description = "A malformed query string", body = ErrorBody),
        NoSuchChannel,
    )
)]
pub async fn get_channel(
    AxState(st): AxState<State>,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<PlaybackQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let reveal = may_see_private(&st, &name, &headers, None, q.playback.as_deref()).await?;
    Ok(axum::Json(load(&st, &name, reveal).await?).into_response())
}

/// `PATCH /api/channels/{name}` body: any of these.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelPatch {
    /// At most 140 characters.
    #[schema(max_length = 140)]
    title: Option<String>,
    /// At most 2000 characters.
    #[schema(max_length = 2000)]
    description: Option<String>,
    /// At most 64 characters.
    #[schema(max_length = 64)]
    category: Option<String>,
    /// Hide the channel from `GET /api/live`.
    private: Option<bool>,
    /// Seconds a chatter waits between messages, 0 to 3600 (0: off).
    #[schema(minimum = 0, maximum = 3600)]
    slow_mode_secs: Option<i64>,
    /// Chat messages containing any of these (case-insensitive) are refused: at most 100
    /// terms of at most 64 characters, one line each. Replaces the list.
    #[schema(max_items = 100)]
    blocked_terms: Option<Vec<String>>,
    /// What a message scored at or above the threshold gets: `off`, `flag` or `hold`.
    toxicity_action: Option<ToxicityAction>,
    /// The toxicity score from which the action applies, 0.05 to 1.
    #[schema(minimum = 0.05, maximum = 1.0)]
    toxicity_threshold: Option<f64>,
}

fn limit(field: &str, value: &Option<String>, max: usize) -> Result<(), ApiError> {
    match value {
        Some(v) if v.chars().count() > max => Err(ApiError::BadRequest(format!(
            "{field}: at most {max} characters"
        ))),
        _ => Ok(()),
    }
}

/// `PATCH /api/channels/{name}` (owner): title, description, category, private, slow mode,
/// blocked terms, what toxic messages get.
#[utoipa::path(
    patch,
    path = "/api/channels/{name}",
    tag = "channels",
    params(ChannelPath),
    request_body = ChannelPatch,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The channel as changed", body = ChannelOut),
        (status = 400, description = "Malformed JSON, an unknown field or a value out of range",
            body = ErrorBody),
        Unauthorized,
        NotOwner,
        NoSuchChannel,
        BodyRejected,
    )
)]
pub async fn patch_channel(
    AxState(st): AxState<State>,
    Path(name): Path<String>,
    user: User,
    JsonBody(p): JsonBody<ChannelPatch>,
) -> Result<Response, ApiError> {
    limit("title", &p.title, 140)?;
    limit("description", &p.description, 2000)?;
    limit("category", &p.category, 64)?;
    if p.slow_mode_secs.is_some_and(|s| !(0..=3600).contains(&s)) {
        return Err(ApiError::BadRequest("slow_mode_secs: 0 to 3600".into()));
    }
    if p.toxicity_threshold
        .is_some_and(|t| !(0.05..=1.0).contains(&t))
    {
        return Err(ApiError::BadRequest("toxicity_threshold: 0.05 to 1".into()));
    }
    let terms = match &p.blocked_terms {
        Some(t)
            if t.len() > 100 || t.iter().any(|w| w.chars().count() > 64 || w.contains('\n')) =>
        {
            return Err(ApiError::BadRequest(
                "blocked_terms: at most 100 terms of at most 64 characters, one line each".into(),
            ))
        }
        Some(t) => Some(t.join("\n")),
        None => None,
    };
    owned(&st, &name, &user).await?;
    sqlx::query(
        "UPDATE channels SET title = COALESCE($1, title), description = COALESCE($2, description), \
         category = COALESCE($3, category), private = COALESCE($4, private), \
         slow_mode_secs = COALESCE($5, slow_mode_secs), blocked_terms = COALESCE($6, blocked_terms), \
         toxicity_action = COALESCE($7, toxicity_action), \
         toxicity_threshold = COALESCE($8, toxicity_threshold) WHERE name = $9",
    )
    .bind(p.title)
    .bind(p.description)
    .bind(p.category)
    .bind(p.private.map(i64::from))
    .bind(p.slow_mode_secs)
    .bind(terms)
    .bind(p.toxicity_action.map(ToxicityAction::as_str))
    .bind(p.toxicity_threshold)
    .bind(&name)
    .execute(st.store.pool())
    .await
    .map_err(db)?;
    if p.private == Some(true) {
        // Viewers who joined while it was public hold no token: they go, here and at edges.
        st.live.privatised(&name).await;
    }
    Ok(axum::Json(load(&st, &name, true).await?).into_response())
}

/// `POST /api/channels/{name}/stream-key` (owner): a new stream key; the old one stops working.
#[utoipa::path(
    post,
    path = "/api/channels/{name}/stream-key",
    tag = "channels",
    params(ChannelPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new stream key, shown once", body = StreamKeyOut),
        Unauthorized,
        NotOwner,
        NoSuchChannel,
    )
)]
pub async fn rotate_key(
    AxState(st): AxState<State>,
    Path(name): Path<String>,
    user: User,
) -> Result<Response, ApiError> {
    owned(&st, &name, &user).await?;
    let key = st
        .store
        .rotate_key(&name)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(format!("no such channel: {name}")))?;
    // The old key's publisher does not keep streaming under the new key.
    st.live.end_publisher(&name).await;
    let body = StreamKeyOut {
        channel: name,
        stream_key: key.expose().to_string(),
    };
    Ok(axum::Json(body).into_response())
}

/// `GET /api/live?limit=&offset=`: channels live now, most viewers first.
#[utoipa::path(
    get,
    path = "/api/live",
    tag = "channels",
    params(Page),
    responses(
        (status = 200, description = "Public channels live now, most viewers first",
            body = Paged<ChannelOut>),
        BadPage,
    )
)]
pub async fn live_now(
    AxState(st): AxState<State>,
    QueryParams(page): QueryParams<Page>,
) -> Result<Response, ApiError> {
    let (limit, offset) = page.bounds()?;
    let private: std::collections::HashSet<String> =
        sqlx::query_as::<_, (String,)>("SELECT name FROM channels WHERE private <> 0")
            .fetch_all(st.store.pool())
            .await
            .map_err(db)?
            .into_iter()
            .map(|(n,)| n)
            .collect();
    // Private channels are neither listed nor counted in `total`.
    let mut live: Vec<(String, LiveState)> = st
        .live
        .channels()
        .await
        .into_iter()
        .filter(|(name, s)| s.live && !private.contains(name))
        .map(|(name, mut s)| {
            s.viewers = st.board.total(&name, s.viewers);
            (name, s)
        })
        .collect();
    live.sort_by(|a, b| b.1.viewers.cmp(&a.1.viewers).then(a.0.cmp(&b.0)));
    let total = live.len();
    let mut items = Vec::new();
    for (name, _) in live
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(0))
        .take(usize::try_from(limit).unwrap_or(0))
    {
        // A relayed or just-deleted channel may be live without a row here: skip it.
        match load(&st, &name, false).await {
            Ok(c) if !c.private => items.push(c),
            Ok(_) | Err(ApiError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let total = i64::try_from(total).unwrap_or(i64::MAX);
    Ok(axum::Json(Paged { total, items }).into_response())
}
