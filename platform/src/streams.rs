//! Stream records (one per publishing session at an origin), donations, and the events they
//! raise for webhooks, each written in one transaction with its outbox deliveries.

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_common::ApiError;
use serde::{Deserialize, Serialize};
use storage::Store;
use utoipa::ToSchema;

use crate::accounts::{random_hex, User};
use crate::openapi::{BodyRejected, ChannelPath, ErrorBody, NoSuchChannel, Unauthorized};
use crate::webhooks::enqueue;
use crate::{db, now, JsonBody, State};

/// A stream record: one publishing session of a channel.
#[derive(Serialize, ToSchema)]
struct StreamOut {
    /// Stream id (`s_...`).
    id: String,
    /// Channel name.
    channel: String,
    /// Went live (Unix seconds).
    started_at: i64,
    /// Went offline (Unix seconds); null while live.
    #[schema(required = true)]
    ended_at: Option<i64>,
    /// Not ended yet.
    live: bool,
}

/// `POST /api/channels/{name}/donations` answer.
#[derive(Serialize, ToSchema)]
struct DonationOut {
    /// Donation id (`don_...`).
    id: String,
}

/// A publisher went live on `channel`: open a stream record and announce `stream.live`.
/// `Ok(None)`: no such channel here (a relayed stream at an edge).
pub async fn started(
    store: &Store,
    channel: &str,
    public_url: &str,
) -> Result<Option<String>, sqlx::Error> {
    let mut tx = store.pool().begin().await?;
    let exists: Option<(String,)> = sqlx::query_as("SELECT name FROM channels WHERE name = $1")
        .bind(channel)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    // A record left open by a crash ends where the new one starts.
    sqlx::query("UPDATE streams SET ended_at = $1 WHERE channel = $2 AND ended_at IS NULL")
        .bind(now())
        .bind(channel)
        .execute(&mut *tx)
        .await?;
    let id = format!(
        "s_{}",
        random_hex(12).map_err(|e| sqlx::Error::Protocol(e.to_string()))?
    );
    sqlx::query("INSERT INTO streams (id, channel, started_at) VALUES ($1, $2, $3)")
        .bind(&id)
        .bind(channel)
        .bind(now())
        .execute(&mut *tx)
        .await?;
    enqueue(
        &mut tx,
        channel,
        "stream.live",
        serde_json::json!({"stream": id}),
        public_url,
    )
    .await?;
    tx.commit().await?;
    Ok(Some(id))
}

/// The publisher of `channel` left: close its stream record and announce `stream.offline`.
pub async fn ended(store: &Store, channel: &str, public_url: &str) -> Result<(), sqlx::Error> {
    let mut tx = store.pool().begin().await?;
    let open: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM streams WHERE channel = $1 AND ended_at IS NULL ORDER BY started_at DESC",
    )
    .bind(channel)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id,)) = open else {
        return Ok(());
    };
    sqlx::query("UPDATE streams SET ended_at = $1 WHERE id = $2")
        .bind(now())
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    enqueue(
        &mut tx,
        channel,
        "stream.offline",
        serde_json::json!({"stream": id}),
        public_url,
    )
    .await?;
    tx.commit().await
}

/// `GET /api/streams/{id}`.
#[utoipa::path(
    get,
    path = "/api/streams/{id}",
    tag = "streams",
    params(("id" = String, Path, description = "Stream id (`s_...`)")),
    responses(
        (status = 200, description = "The stream record", body = StreamOut),
        (status = 404, description = "No such stream", body = ErrorBody),
    )
)]
pub async fn get_stream(
    AxState(st): AxState<State>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row: Option<(String, String, i64, Option<i64>)> =
        sqlx::query_as("SELECT id, channel, started_at, ended_at FROM streams WHERE id = $1")
            .bind(&id)
            .fetch_optional(st.store.pool())
            .await
            .map_err(db)?;
    let (id, channel, started_at, ended_at) =
        row.ok_or_else(|| ApiError::NotFound(format!("no such stream: {id}")))?;
    let body = StreamOut {
        id,
        channel,
        started_at,
        ended_at,
        live: ended_at.is_none(),
    };
    Ok(axum::Json(body).into_response())
}

/// `POST /api/channels/{name}/donations` body (recorded only: no payment is processed).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Donation {
    /// Amount in cents, 1 to 1000000000.
    #[schema(minimum = 1, maximum = 1000000000)]
    amount_cents: i64,
    /// ISO 4217 code in capitals, such as `EUR`.
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    currency: String,
    /// At most 500 characters (default empty).
    #[serde(default)]
    #[schema(max_length = 500)]
    message: String,
}

/// `POST /api/channels/{name}/donations` (signed in): record it and announce `donation`.
#[utoipa::path(
    post,
    path = "/api/channels/{name}/donations",
    tag = "streams",
    params(ChannelPath),
    request_body = Donation,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Recorded (no payment is processed); webhooks get `donation`",
            body = DonationOut),
        (status = 400, description = "Malformed JSON, an unknown field or a value out of range",
            body = ErrorBody),
        Unauthorized,
        NoSuchChannel,
        BodyRejected,
    )
)]
pub async fn donate(
    AxState(st): AxState<State>,
    Path(channel): Path<String>,
    user: User,
    JsonBody(d): JsonBody<Donation>,
) -> Result<Response, ApiError> {
    if !(1..=1_000_000_000).contains(&d.amount_cents) {
        return Err(ApiError::BadRequest("amount_cents: 1 to 1000000000".into()));
    }
    if d.currency.len() != 3 || !d.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ApiError::BadRequest(
            "currency: an ISO 4217 code such as EUR".into(),
        ));
    }
    if d.message.chars().count() > 500 {
        return Err(ApiError::BadRequest(
            "message: at most 500 characters".into(),
        ));
    }
    if !st
        .store
        .channel_exists(&channel)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
    {
        return Err(ApiError::NotFound(format!("no such channel: {channel}")));
    }
    let id = format!("don_{}", random_hex(12)?);
    let mut tx = st.store.pool().begin().await.map_err(db)?;
    sqlx::query(
        "INSERT INTO donations (id, channel, user_id, amount_cents, currency, message, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(&channel)
    .bind(&user.id)
    .bind(d.amount_cents)
    .bind(&d.currency)
    .bind(&d.message)
    .bind(now())
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    // No payment provider yet: receivers must not treat this as money received.
    let data = serde_json::json!({
        "donation": id, "user": user.name, "amount_cents": d.amount_cents,
        "currency": d.currency, "message": d.message, "verified": false,
    });
    enqueue(&mut tx, &channel, "donation", data, &st.settings.public_url)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok((StatusCode::CREATED, axum::Json(DonationOut { id })).into_response())
}
