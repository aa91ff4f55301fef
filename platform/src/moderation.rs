//! Chat moderation over REST (the channel's owner or its moderators): delete a message, ban or
//! time out a user, lift a ban; the owner names and removes moderators. The owner cannot be
//! banned and moderators cannot ban each other ([`crate::access::may_ban`]).

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_common::ApiError;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::access::{may_ban, role, Role};
use crate::accounts::User;
use crate::chat::{event, now_ms};
use crate::openapi::{
    BodyRejected, ChannelPath, ChannelUserPath, ErrorBody, NoSuchChannelOrUser, NotModerator,
    NotOwner, Unauthorized,
};
use crate::{db, JsonBody, State};

/// The signed-in user may moderate `channel` (its owner or a moderator); `owner_only` for
/// naming moderators.
pub(crate) async fn may_moderate(
    st: &State,
    channel: &str,
    user: &User,
    owner_only: bool,
) -> Result<Role, ApiError> {
    let role = role(st, channel, &user.id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no such channel: {channel}")))?;
    match role {
        Role::Owner => Ok(role),
        Role::Moderator if !owner_only => Ok(role),
        _ => Err(ApiError::Forbidden(if owner_only {
            "only the channel's owner may do this"
        } else {
            "only the channel's owner or moderators may do this"
        })),
    }
}

/// Check that `user` may moderate `channel` (the owner only, for `owner_only`), then find the
/// user named `name` whom the action is about.
async fn target(
    st: &State,
    channel: &str,
    user: &User,
    owner_only: bool,
    name: &str,
) -> Result<(Role, String), ApiError> {
    let role = may_moderate(st, channel, user, owner_only).await?;
    Ok((role, user_id(st, name).await?))
}

async fn user_id(st: &State, name: &str) -> Result<String, ApiError> {
    let row: Option<(String,)> = sqlx::query_as("SELECT id FROM users WHERE name = $1")
        .bind(name)
        .fetch_optional(st.store.pool())
        .await
        .map_err(db)?;
    row.map(|(id,)| id)
        .ok_or_else(|| ApiError::NotFound(format!("no such user: {name}")))
}

/// `DELETE /api/channels/{name}/chat/{id}` (owner or moderator).
#[utoipa::path(
    delete,
    path = "/api/channels/{name}/chat/{id}",
    tag = "chat",
    params(ChannelPath, ("id" = String, Path, description = "Message id (`m_...`)")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted; chat sockets get a `deleted` event"),
        Unauthorized,
        NotModerator,
        (status = 404, description = "No such channel or message", body = ErrorBody),
    )
)]
pub async fn delete_message(
    AxState(st): AxState<State>,
    Path((channel, id)): Path<(String, String)>,
    user: User,
) -> Result<Response, ApiError> {
    may_moderate(&st, &channel, &user, false).await?;
    let done = sqlx::query("UPDATE chat_messages SET deleted = 1 WHERE id = $1 AND channel = $2")
        .bind(&id)
        .bind(&channel)
        .execute(st.store.pool())
        .await
        .map_err(db)?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound(format!("no such message: {id}")));
    }
    st.chat
        .publish(&channel, event("deleted", serde_json::json!({"id": id})))
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /api/channels/{name}/bans/{user}` body: `{}` bans, `{"seconds": N}` times out.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BanBody {
    /// Time out for this long (1 to 1209600, 14 days); without it, ban until lifted.
    #[schema(minimum = 1, maximum = 1209600)]
    seconds: Option<i64>,
}

/// `PUT /api/channels/{name}/bans/{user}` (owner or moderator).
#[utoipa::path(
    put,
    path = "/api/channels/{name}/bans/{user}",
    tag = "chat",
    params(ChannelUserPath),
    request_body = BanBody,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Banned or timed out (replacing an earlier ban)"),
        (status = 400, description = "Malformed JSON, an unknown field or seconds out of range",
            body = ErrorBody),
        Unauthorized,
        NotModerator,
        NoSuchChannelOrUser,
        BodyRejected,
    )
)]
pub async fn ban(
    AxState(st): AxState<State>,
    Path((channel, name)): Path<(String, String)>,
    user: User,
    JsonBody(b): JsonBody<BanBody>,
) -> Result<Response, ApiError> {
    if b.seconds
        .is_some_and(|s| !(1..=14 * 24 * 3600).contains(&s))
    {
        return Err(ApiError::BadRequest(
            "seconds: 1 to 1209600 (14 days)".into(),
        ));
    }
    let (actor, target_id) = target(&st, &channel, &user, false, &name).await?;
    if let Some(target) = role(&st, &channel, &target_id).await? {
        if !may_ban(actor, target) {
            return Err(ApiError::Forbidden(
                "the owner cannot be banned, and moderators cannot ban each other",
            ));
        }
    }
    let until = b.seconds.map(|s| now_ms() + s * 1000);
    sqlx::query(
        "INSERT INTO chat_bans (channel, user_id, until_ms, by_user) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (channel, user_id) DO UPDATE SET until_ms = excluded.until_ms, \
         by_user = excluded.by_user",
    )
    .bind(&channel)
    .bind(&target_id)
    .bind(until)
    .bind(&user.id)
    .execute(st.store.pool())
    .await
    .map_err(db)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /api/channels/{name}/bans/{user}` (owner or moderator).
#[utoipa::path(
    delete,
    path = "/api/channels/{name}/bans/{user}",
    tag = "chat",
    params(ChannelUserPath),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Not banned (also when they were not)"),
        Unauthorized,
        NotModerator,
        NoSuchChannelOrUser,
    )
)]
pub async fn unban(
    AxState(st): AxState<State>,
    Path((channel, name)): Path<(String, String)>,
    user: User,
) -> Result<Response, ApiError> {
    let (_, target_id) = target(&st, &channel, &user, false, &name).await?;
    on_pair(
        &st,
        "DELETE FROM chat_bans WHERE channel = $1 AND user_id = $2",
        &channel,
        &target_id,
    )
    .await
}

/// `PUT /api/channels/{name}/moderators/{user}` (owner).
#[utoipa::path(
    put,
    path = "/api/channels/{name}/moderators/{user}",
    tag = "chat",
    params(ChannelUserPath),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "A moderator (also when they already were)"),
        Unauthorized,
        NotOwner,
        NoSuchChannelOrUser,
    )
)]
pub async fn add_moderator(
    AxState(st): AxState<State>,
    Path((channel, name)): Path<(String, String)>,
    user: User,
) -> Result<Response, ApiError> {
    let (_, target_id) = target(&st, &channel, &user, true, &name).await?;
    on_pair(
        &st,
        "INSERT INTO channel_moderators (channel, user_id) VALUES ($1, $2) \
         ON CONFLICT (channel, user_id) DO NOTHING",
        &channel,
        &target_id,
    )
    .await
}

/// `DELETE /api/channels/{name}/moderators/{user}` (owner).
#[utoipa::path(
    delete,
    path = "/api/channels/{name}/moderators/{user}",
    tag = "chat",
    params(ChannelUserPath),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Not a moderator (also when they were not)"),
        Unauthorized,
        NotOwner,
        NoSuchChannelOrUser,
    )
)]
pub async fn remove_moderator(
    AxState(st): AxState<State>,
    Path((channel, name)): Path<(String, String)>,
    user: User,
) -> Result<Response, ApiError> {
    let (_, target_id) = target(&st, &channel, &user, true, &name).await?;
    on_pair(
        &st,
        "DELETE FROM channel_moderators WHERE channel = $1 AND user_id = $2",
        &channel,
        &target_id,
    )
    .await
}

/// Run a moderation statement over `($1, $2) = (channel, user id)`: 204.
async fn on_pair(
    st: &State,
    sql: &str,
    channel: &str,
    user_id: &str,
) -> Result<Response, ApiError> {
    sqlx::query(sql)
        .bind(channel)
        .bind(user_id)
        .execute(st.store.pool())
        .await
        .map_err(db)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
