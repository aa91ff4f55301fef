//! Follows: a signed-in user follows a channel (idempotent both ways), and anyone can list a
//! channel's followers and a user's follows, newest first, paginated, with counts.

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_common::ApiError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::accounts::User;
use crate::openapi::{BadPage, ChannelPath, ErrorBody, NoSuchChannel, Unauthorized};
use crate::webhooks::enqueue;
use crate::{db, now, Page, Paged, QueryParams, State};

/// A follower of a channel.
#[derive(Serialize, ToSchema)]
pub struct Follower {
    /// User name.
    user: String,
    /// Following since (Unix seconds).
    since: i64,
}

/// A channel a user follows.
#[derive(Serialize, ToSchema)]
pub struct Followed {
    /// Channel name.
    channel: String,
    /// Following since (Unix seconds).
    since: i64,
}

async fn channel_exists(st: &State, name: &str) -> Result<(), ApiError> {
    let exists = st
        .store
        .channel_exists(name)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if exists {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("no such channel: {name}")))
    }
}

/// A `follow` event for the same user and channel is raised at most once in this long.
pub const FOLLOW_EVENT_QUIET_SECS: i64 = 6 * 3600;

/// `PUT /api/channels/{name}/follow`: 204, whether or not it was followed before.
#[utoipa::path(
    put,
    path = "/api/channels/{name}/follow",
    tag = "follows",
    params(ChannelPath),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Followed (also when it already was)"),
        Unauthorized,
        NoSuchChannel,
    )
)]
pub async fn follow(
    AxState(st): AxState<State>,
    Path(name): Path<String>,
    user: User,
) -> Result<Response, ApiError> {
    channel_exists(&st, &name).await?;
    // The follow and its webhook deliveries commit together; a repeated follow raises no event.
    let mut tx = st.store.pool().begin().await.map_err(db)?;
    let inserted = sqlx::query(
        "INSERT INTO follows (user_id, channel, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id, channel) DO NOTHING",
    )
    .bind(&user.id)
    .bind(&name)
    .bind(now())
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    if inserted.rows_affected() == 1 {
        // Raised once per pair per FOLLOW_EVENT_QUIET: toggling follow does not spam
        // the channel's webhooks.
        let t = now();
        let raised = sqlx::query(
            "INSERT INTO follow_events (user_id, channel, raised_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, channel) DO UPDATE SET raised_at = excluded.raised_at \
             WHERE follow_events.raised_at < $4",
        )
        .bind(&user.id)
        .bind(&name)
        .bind(t)
        .bind(t - FOLLOW_EVENT_QUIET_SECS)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if raised.rows_affected() == 1 {
            let data = serde_json::json!({"user": user.name});
            enqueue(&mut tx, &name, "follow", data, &st.settings.public_url)
                .await
                .map_err(db)?;
        }
    }
    tx.commit().await.map_err(db)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /api/channels/{name}/follow`: 204, whether or not it was followed.
#[utoipa::path(
    delete,
    path = "/api/channels/{name}/follow",
    tag = "follows",
    params(ChannelPath),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Not followed (also when it was not)"),
        Unauthorized,
        NoSuchChannel,
    )
)]
pub async fn unfollow(
    AxState(st): AxState<State>,
    Path(name): Path<String>,
    user: User,
) -> Result<Response, ApiError> {
    channel_exists(&st, &name).await?;
    sqlx::query("DELETE FROM follows WHERE user_id = $1 AND channel = $2")
        .bind(&user.id)
        .bind(&name)
        .execute(st.store.pool())
        .await
        .map_err(db)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/channels/{name}/followers?limit=&offset=`: newest first.
#[utoipa::path(
    get,
    path = "/api/channels/{name}/followers",
    tag = "follows",
    params(ChannelPath, Page),
    responses(
        (status = 200, description = "Followers, newest first", body = Paged<Follower>),
        BadPage,
        NoSuchChannel,
    )
)]
pub async fn followers(
    AxState(st): AxState<State>,
    Path(name): Path<String>,
    QueryParams(page): QueryParams<Page>,
) -> Result<Response, ApiError> {
    let (limit, offset) = page.bounds()?;
    channel_exists(&st, &name).await?;
    let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM follows WHERE channel = $1")
        .bind(&name)
        .fetch_one(st.store.pool())
        .await
        .map_err(db)?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT u.name, f.created_at FROM follows f JOIN users u ON u.id = f.user_id \
         WHERE f.channel = $1 ORDER BY f.created_at DESC, u.name LIMIT $2 OFFSET $3",
    )
    .bind(&name)
    .bind(limit)
    .bind(offset)
    .fetch_all(st.store.pool())
    .await
    .map_err(db)?;
    let items = rows
        .into_iter()
        .map(|(user, since)| Follower { user, since });
    Ok(page_of(total, items))
}

/// `GET /api/users/{name}/following?limit=&offset=`: newest first.
#[utoipa::path(
    get,
    path = "/api/users/{name}/following",
    tag = "follows",
    params(("name" = String, Path, description = "User name"), Page),
    responses(
        (status = 200, description = "Channels the user follows, newest first",
            body = Paged<Followed>),
        BadPage,
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
pub async fn following(
    AxState(st): AxState<State>,
    Path(name): Path<String>,
    QueryParams(page): QueryParams<Page>,
) -> Result<Response, ApiError> {
    let (limit, offset) = page.bounds()?;
    let user: Option<(String,)> = sqlx::query_as("SELECT id FROM users WHERE name = $1")
        .bind(&name)
        .fetch_optional(st.store.pool())
        .await
        .map_err(db)?;
    let (id,) = user.ok_or_else(|| ApiError::NotFound(format!("no such user: {name}")))?;
    let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM follows WHERE user_id = $1")
        .bind(&id)
        .fetch_one(st.store.pool())
        .await
        .map_err(db)?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT channel, created_at FROM follows WHERE user_id = $1 \
         ORDER BY created_at DESC, channel LIMIT $2 OFFSET $3",
    )
    .bind(&id)
    .bind(limit)
    .bind(offset)
    .fetch_all(st.store.pool())
    .await
    .map_err(db)?;
    let items = rows
        .into_iter()
        .map(|(channel, since)| Followed { channel, since });
    Ok(page_of(total, items))
}

/// `{total, items}`.
fn page_of<T: Serialize>(total: i64, items: impl Iterator<Item = T>) -> Response {
    let items = items.collect();
    axum::Json(Paged { total, items }).into_response()
}
