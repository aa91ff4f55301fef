//! Webhooks: owners register URLs per event (`stream.live`, `stream.offline`, `follow`,
//! `donation`, `stage.joined`, `stage.left`). An event writes one delivery row per subscribed webhook **in the same
//! transaction** as the event itself (the outbox), so what was accepted is delivered even if
//! the node dies at once. A worker sends due deliveries, signed, and retries failures with
//! exponential backoff; every node may run one (a delivery is claimed before it is sent, so
//! two workers do not send it twice at the same time; delivery is at least once).
//!
//! Signature: `X-Aethex-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
//! with `X-Aethex-Event` and `X-Aethex-Delivery` (an id, the same on every retry).

use std::time::Duration;

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use http_common::ApiError;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::Any;
use storage::Store;
use utoipa::ToSchema;

use crate::accounts::{random_hex, User};
use crate::channels::owned;
use crate::openapi::{
    BodyRejected, ChannelPath, ErrorBody, NoSuchChannel, NoSuchWebhook, NotOwner, Unauthorized,
    WebhookPath,
};
use crate::{db, JsonBody, State};

/// The events a webhook may subscribe to.
pub const EVENTS: [&str; 6] = [
    "stream.live",
    "stream.offline",
    "follow",
    "donation",
    "stage.joined",
    "stage.left",
];
/// Attempts before a delivery is given up.
pub const MAX_ATTEMPTS: i64 = 10;
/// A claimed delivery is retried by another worker after this long if its sender died.
const CLAIM: Duration = Duration::from_secs(30);

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Write the deliveries of `event` on `channel` to the outbox, inside the caller's transaction.
pub async fn enqueue(
    tx: &mut sqlx::Transaction<'_, Any>,
    channel: &str,
    event: &str,
    data: serde_json::Value,
    public_url: &str,
) -> Result<(), sqlx::Error> {
    let hooks: Vec<(String, String, String)> =
        sqlx::query_as("SELECT id, events, format FROM webhooks WHERE channel = $1")
            .bind(channel)
            .fetch_all(&mut **tx)
            .await?;
    let now = now_ms();
    for (id, events, format) in hooks {
        if !events.lines().any(|e| e == event) {
            continue;
        }
        let payload = if format == "discord" && event == "stream.live" {
            let watch = format!("{}/watch/{channel}", public_url.trim_end_matches('/'));
            serde_json::json!({"content": format!("**{channel}** is live: {watch}")})
        } else {
            serde_json::json!({"event": event, "channel": channel, "at_ms": now, "data": data})
        };
        let delivery = format!(
            "d_{}",
            random_hex(12).map_err(|e| sqlx::Error::Protocol(e.to_string()))?
        );
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, webhook_id, event, payload, created_at_ms, \
             next_attempt_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(delivery)
        .bind(&id)
        .bind(event)
        .bind(payload.to_string())
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// `POST /api/channels/{name}/webhooks` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// An http(s) URL of at most 2048 characters.
    #[schema(max_length = 2048)]
    url: String,
    /// One or more of `stream.live`, `stream.offline`, `follow`, `donation`, `stage.joined`,
    /// `stage.left`.
    #[schema(min_items = 1, example = json!(["stream.live", "follow"]))]
    events: Vec<String>,
    /// `json` (default: `{event, channel, at_ms, data}`) or `discord` (a Discord message for
    /// `stream.live`).
    #[serde(default)]
    #[schema(example = "json")]
    format: Option<String>,
}

/// A webhook.
#[derive(Serialize, ToSchema)]
struct WebhookOut {
    /// Webhook id (`wh_...`).
    id: String,
    /// Channel name.
    channel: String,
    /// Where deliveries are sent.
    url: String,
    /// The events it gets.
    events: Vec<String>,
    /// `json` or `discord`.
    format: String,
    /// Signing secret (`whsec_...`) of `X-Aethex-Signature`: only in the answer that creates
    /// the webhook.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

/// Where a delivery stands.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum DeliveryState {
    /// Answered with a 2xx.
    Delivered,
    /// Given up after the last attempt.
    Failed,
    /// To be (re)tried.
    Pending,
}

/// One delivery of an event to a webhook.
#[derive(Serialize, ToSchema)]
struct DeliveryOut {
    /// Delivery id (`d_...`, sent as `X-Aethex-Delivery`).
    id: String,
    /// The event.
    event: String,
    /// When the event happened (Unix milliseconds).
    created_at_ms: i64,
    /// Attempts so far.
    attempts: i64,
    /// When it was delivered (Unix milliseconds).
    #[schema(required = true)]
    delivered_at_ms: Option<i64>,
    /// HTTP status of the last attempt.
    #[schema(required = true)]
    last_status: Option<i64>,
    /// Why the last attempt failed.
    #[schema(required = true)]
    last_error: Option<String>,
    /// Delivered, failed (given up) or pending.
    state: DeliveryState,
}

/// `GET /api/webhooks/{id}/deliveries` answer.
#[derive(Serialize, ToSchema)]
struct DeliveriesOut {
    /// The last 100 deliveries, newest first.
    items: Vec<DeliveryOut>,
}

/// `POST /api/channels/{name}/webhooks` (owner): 201 with the signing secret, shown once.
#[utoipa::path(
    post,
    path = "/api/channels/{name}/webhooks",
    tag = "webhooks",
    operation_id = "create_webhook",
    params(ChannelPath),
    request_body = NewWebhook,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; the signing secret is shown once",
            body = WebhookOut),
        (status = 400, description = "Malformed JSON, an unknown field, a bad URL, event or format, \
            or a private or local destination (webhooks.allow_private_networks)", body = ErrorBody),
        (status = 409, description = "The channel has webhooks.max_per_channel webhooks already",
            body = ErrorBody),
        Unauthorized,
        NotOwner,
        NoSuchChannel,
        BodyRejected,
    )
)]
pub async fn create(
    AxState(st): AxState<State>,
    Path(channel): Path<String>,
    user: User,
    JsonBody(w): JsonBody<NewWebhook>,
) -> Result<Response, ApiError> {
    let url_ok = (w.url.starts_with("https://") || w.url.starts_with("http://"))
        && w.url.len() <= 2048
        && !w.url.contains(char::is_whitespace);
    if !url_ok {
        return Err(ApiError::BadRequest(
            "url: an http(s) URL of at most 2048 characters".into(),
        ));
    }
    let allow_private = st.guards.limits.webhooks_allow_private;
    if let Err(why) = crate::webhook_target::check_url(&w.url, allow_private) {
        st.guards.refused("webhook_destination");
        return Err(ApiError::BadRequest(why.into()));
    }
    if w.events.is_empty() || w.events.iter().any(|e| !EVENTS.contains(&e.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "events: one or more of {}",
            EVENTS.join(", ")
        )));
    }
    let format = w.format.unwrap_or_else(|| "json".into());
    if format != "json" && format != "discord" {
        return Err(ApiError::BadRequest("format: json or discord".into()));
    }
    owned(&st, &channel, &user).await?;
    let held: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM webhooks WHERE channel = $1")
        .bind(&channel)
        .fetch_one(st.store.pool())
        .await
        .map_err(db)?;
    let cap = st.guards.limits.webhooks_per_channel;
    if usize::try_from(held.0).unwrap_or(usize::MAX) >= cap {
        st.guards.refused("webhooks_per_channel");
        return Err(ApiError::Conflict(format!(
            "at most {cap} webhooks per channel: delete one first"
        )));
    }
    let id = format!("wh_{}", random_hex(12)?);
    let secret = format!("whsec_{}", random_hex(24)?);
    sqlx::query(
        "INSERT INTO webhooks (id, channel, url, events, secret, format, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(&channel)
    .bind(&w.url)
    .bind(w.events.join("\n"))
    .bind(&secret)
    .bind(&format)
    .bind(crate::now())
    .execute(st.store.pool())
    .await
    .map_err(db)?;
    let out = WebhookOut {
        id,
        channel,
        url: w.url,
        events: w.events,
        format,
        secret: Some(secret),
    };
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

/// The webhook and its channel, if `user` owns the channel (404 otherwise, for both).
async fn owned_hook(st: &State, id: &str, user: &User) -> Result<String, ApiError> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT w.channel, c.owner_id FROM webhooks w JOIN channels c ON c.name = w.channel \
         WHERE w.id = $1",
    )
    .bind(id)
    .fetch_optional(st.store.pool())
    .await
    .map_err(db)?;
    match row {
        Some((channel, Some(owner))) if owner == user.id => Ok(channel),
        _ => Err(ApiError::NotFound(format!("no such webhook: {id}"))),
    }
}

/// `DELETE /api/webhooks/{id}` (owner).
#[utoipa::path(
    delete,
    path = "/api/webhooks/{id}",
    tag = "webhooks",
    operation_id = "remove_webhook",
    params(WebhookPath),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed, with its pending deliveries"),
        Unauthorized,
        NoSuchWebhook,
    )
)]
pub async fn remove(
    AxState(st): AxState<State>,
    Path(id): Path<String>,
    user: User,
) -> Result<Response, ApiError> {
    owned_hook(&st, &id, &user).await?;
    sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
        .bind(&id)
        .execute(st.store.pool())
        .await
        .map_err(db)?;
    sqlx::query("DELETE FROM webhooks WHERE id = $1")
        .bind(&id)
        .execute(st.store.pool())
        .await
        .map_err(db)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

type DeliveryRow = (
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

/// `GET /api/webhooks/{id}/deliveries` (owner): the last 100, newest first.
#[utoipa::path(
    get,
    path = "/api/webhooks/{id}/deliveries",
    tag = "webhooks",
    params(WebhookPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The last 100 deliveries, newest first",
            body = DeliveriesOut),
        Unauthorized,
        NoSuchWebhook,
    )
)]
pub async fn deliveries(
    AxState(st): AxState<State>,
    Path(id): Path<String>,
    user: User,
) -> Result<Response, ApiError> {
    owned_hook(&st, &id, &user).await?;
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT id, event, created_at_ms, attempts, delivered_at_ms, last_status, last_error \
         FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY created_at_ms DESC, id LIMIT 100",
    )
    .bind(&id)
    .fetch_all(st.store.pool())
    .await
    .map_err(db)?;
    let items = rows
        .into_iter()
        .map(|(id, event, created, attempts, delivered, status, error)| {
            let state = if delivered.is_some() {
                DeliveryState::Delivered
            } else if attempts >= MAX_ATTEMPTS {
                DeliveryState::Failed
            } else {
                DeliveryState::Pending
            };
            DeliveryOut {
                id,
                event,
                created_at_ms: created,
                attempts,
                delivered_at_ms: delivered,
                last_status: status,
                last_error: error,
                state,
            }
        })
        .collect();
    Ok(axum::Json(DeliveriesOut { items }).into_response())
}

/// `X-Aethex-Signature` for `body` sent at `t` (Unix seconds).
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// How the delivery worker runs.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// Look for due deliveries this often.
    pub poll: Duration,
    /// First retry after this long; each next one after twice as long (capped at 10 min).
    pub backoff: Duration,
    /// Deliver to private and local network addresses too (`webhooks.allow_private_networks`).
    pub allow_private_networks: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(500),
            backoff: Duration::from_secs(2),
            allow_private_networks: false,
        }
    }
}

/// Webhooks delivered to at once (each one's deliveries in order).
const CONCURRENT: usize = 8;
/// Deliveries of one webhook per round.
const PER_ROUND: usize = 50;

/// Deliver due webhooks until the task is aborted (as an anonymous worker).
pub fn spawn_worker(store: Store, config: WorkerConfig) -> tokio::task::JoinHandle<()> {
    spawn_worker_as(store, config, String::new())
}

/// Deliver due webhooks until the task is aborted, claiming them as `node` (a stable node id):
/// deliveries this node had claimed when it stopped are due again at once.
pub fn spawn_worker_as(
    store: Store,
    config: WorkerConfig,
    node: String,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = crate::webhook_target::client(config.allow_private_networks);
        if !node.is_empty() {
            let released = sqlx::query(
                "UPDATE webhook_deliveries SET next_attempt_ms = $1, claimed_by = NULL \
                 WHERE claimed_by = $2 AND delivered_at_ms IS NULL AND next_attempt_ms > $1",
            )
            .bind(now_ms())
            .bind(&node)
            .execute(store.pool())
            .await;
            match released {
                Ok(r) if r.rows_affected() > 0 => tracing::info!(
                    deliveries = r.rows_affected(),
                    "webhook deliveries claimed before a restart are due again"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not release this node's claims"),
            }
        }
        let node: std::sync::Arc<str> = node.into();
        loop {
            if let Err(e) = deliver_due(&store, &http, config, &node).await {
                tracing::warn!(error = %e, "webhook worker");
            }
            tokio::time::sleep(config.poll).await;
        }
    })
}

/// A due delivery: id, event, payload, attempts, next attempt, url, secret, webhook id.
type Due = (String, String, String, i64, i64, String, String, String);

async fn deliver_due(
    store: &Store,
    http: &reqwest::Client,
    config: WorkerConfig,
    node: &std::sync::Arc<str>,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let due: Vec<Due> = sqlx::query_as(
        "SELECT d.id, d.event, d.payload, d.attempts, d.next_attempt_ms, w.url, w.secret, w.id \
         FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
         WHERE d.delivered_at_ms IS NULL AND d.attempts < $1 AND d.next_attempt_ms <= $2 \
         ORDER BY d.next_attempt_ms LIMIT 200",
    )
    .bind(MAX_ATTEMPTS)
    .bind(now)
    .fetch_all(store.pool())
    .await?;
    // Fairness: each webhook's due deliveries go in order, one after another, in a task of
    // its own; at most CONCURRENT webhooks at once, at most PER_ROUND deliveries each per
    // round. A slow receiver holds one task, never the others' deliveries.
    let mut groups: Vec<(String, Vec<Due>)> = Vec::new();
    for d in due {
        match groups.iter_mut().find(|(hook, _)| *hook == d.7) {
            Some((_, list)) if list.len() < PER_ROUND => list.push(d),
            Some(_) => {}
            None => groups.push((d.7.clone(), vec![d])),
        }
    }
    let mut running = tokio::task::JoinSet::new();
    for (_, list) in groups {
        while running.len() >= CONCURRENT {
            if let Some(Ok(Err(e))) = running.join_next().await {
                tracing::warn!(error = %e, "webhook delivery");
            }
        }
        let (store, http, node) = (store.clone(), http.clone(), node.clone());
        running.spawn(async move {
            for d in list {
                deliver_one(&store, &http, config, &node, d).await?;
            }
            Ok::<(), sqlx::Error>(())
        });
    }
    while let Some(done) = running.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "webhook delivery");
        }
    }
    Ok(())
}

/// What a delivery's owner may see of a failure: coarse, never a port scan's worth of detail.
fn coarse(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if std::error::Error::source(e)
        .is_some_and(|s| s.to_string().contains(crate::webhook_target::REFUSED))
        || e.to_string().contains(crate::webhook_target::REFUSED)
    {
        crate::webhook_target::REFUSED
    } else {
        "could not connect or send"
    }
}

async fn deliver_one(
    store: &Store,
    http: &reqwest::Client,
    config: WorkerConfig,
    node: &str,
    (id, event, payload, attempts, next, url, secret, _hook): Due,
) -> Result<(), sqlx::Error> {
    // Claim it: only the worker whose update matched sends it now.
    let claim = now_ms() + CLAIM.as_millis() as i64;
    let claimed = sqlx::query(
        "UPDATE webhook_deliveries SET next_attempt_ms = $1, claimed_by = $4 \
         WHERE id = $2 AND next_attempt_ms = $3 AND delivered_at_ms IS NULL",
    )
    .bind(claim)
    .bind(&id)
    .bind(next)
    .bind(node)
    .execute(store.pool())
    .await?;
    if claimed.rows_affected() != 1 {
        return Ok(());
    }
    let t = now_ms() / 1000;
    // IP literals do not pass the resolver: checked here (hosts stored before the check
    // existed, or an operator who turned private networks off again).
    let (status, error) =
        match crate::webhook_target::check_url(&url, config.allow_private_networks) {
            Err(_) => (None, Some(crate::webhook_target::REFUSED.to_string())),
            Ok(()) => {
                let sent = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-aethex-event", &event)
                    .header("x-aethex-delivery", &id)
                    .header("x-aethex-signature", signature(&secret, t, &payload))
                    .body(payload)
                    .send()
                    .await;
                match sent {
                    Ok(r) => (Some(i64::from(r.status().as_u16())), None),
                    Err(e) => (None, Some(coarse(&e).to_string())),
                }
            }
        };
    let attempts = attempts + 1;
    if status.is_some_and(|s| (200..300).contains(&s)) {
        sqlx::query(
            "UPDATE webhook_deliveries SET attempts = $1, delivered_at_ms = $2, \
             last_status = $3, last_error = NULL WHERE id = $4",
        )
        .bind(attempts)
        .bind(now_ms())
        .bind(status)
        .bind(&id)
        .execute(store.pool())
        .await?;
    } else {
        let factor = 1u32 << (attempts - 1).clamp(0, 20) as u32;
        let wait = (config.backoff * factor).min(Duration::from_secs(600));
        let error = error.or_else(|| status.map(|s| format!("HTTP {s}")));
        sqlx::query(
            "UPDATE webhook_deliveries SET attempts = $1, next_attempt_ms = $2, \
             last_status = $3, last_error = $4 WHERE id = $5",
        )
        .bind(attempts)
        .bind(now_ms() + wait.as_millis() as i64)
        .bind(status)
        .bind(error)
        .bind(&id)
        .execute(store.pool())
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // A receiver recomputes it the same way: HMAC-SHA256(secret, "1700000000.{}").
        let sig = signature("whsec_test", 1_700_000_000, "{}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test").unwrap();
        mac.update(b"1700000000.{}");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(sig, format!("t=1700000000,v1={expected}"));
    }
}
