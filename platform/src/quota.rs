//! Public API keys and quotas.
//!
//! A request with `X-Api-Key` is counted against the key's tier:
//! - free: 10,000 requests a day, read-only (GET);
//! - pro: 100,000 a day;
//! - enterprise: unlimited.
//!
//! The daily quota and the burst limit count per user (all of a user's keys together; a user
//! holds at most `limits.api_keys_per_user` keys); every client address without a key also
//! has a burst limit (a token bucket of 40, refilled at 20 per second; IPv6 per /64). Over a
//! limit: `429` with `Retry-After` and the `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
//! `X-RateLimit-Reset` headers, which also come with every keyed answer. Daily counters are
//! rows in the database (an `UPSERT` and a sum per request), so they hold across nodes and
//! restarts; burst buckets are per node.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Path, Request, State as AxState};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_common::ApiError;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::accounts::{random_hex, User};
use crate::openapi::{ErrorBody, Unauthorized};
use crate::{db, now, State};

/// Burst bucket size.
const BURST: f64 = 40.0;
/// Burst refill per second.
const RATE: f64 = 20.0;

/// A key's tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// 10k requests a day, GET only.
    Free,
    /// 100k requests a day.
    Pro,
    /// Unlimited.
    Enterprise,
}

impl Tier {
    /// From its stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "free" => Some(Tier::Free),
            "pro" => Some(Tier::Pro),
            "enterprise" => Some(Tier::Enterprise),
            _ => None,
        }
    }

    /// Requests per UTC day (`None`: unlimited).
    pub fn daily(self) -> Option<i64> {
        match self {
            Tier::Free => Some(10_000),
            Tier::Pro => Some(100_000),
            Tier::Enterprise => None,
        }
    }
}

/// Burst buckets per user or client address (per node).
pub struct Buckets(http_common::TokenBuckets<String>);

impl Default for Buckets {
    fn default() -> Self {
        Self(http_common::TokenBuckets::new(RATE, BURST as u32))
    }
}

impl Buckets {
    /// Take one token; `false` when the bucket is empty.
    fn take(&self, who: &str) -> bool {
        self.0.take(&who.to_string(), Instant::now()).is_ok()
    }
}

fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Seconds until the next UTC midnight, and that moment (Unix seconds).
fn next_day() -> (i64, i64) {
    let t = now();
    let reset = (t / 86_400 + 1) * 86_400;
    (reset - t, reset)
}

fn set(resp: &mut Response, name: &'static str, value: i64) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        resp.headers_mut().insert(name, v);
    }
}

fn too_many(message: &'static str, retry_after: i64) -> Response {
    let body = serde_json::json!({"code": "rate_limited", "error": message});
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    set(&mut resp, "retry-after", retry_after.max(1));
    resp
}

/// The middleware in front of every `/api` route.
pub async fn enforce(AxState(st): AxState<State>, req: Request, next: Next) -> Response {
    let key = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Some(key) = key else {
        // Without a key: a burst limit per client address (when the server knows it).
        let ip = req
            .extensions()
            .get::<http_common::ClientAddr>()
            .map(|c| c.0)
            .or_else(|| {
                req.extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0.ip())
            })
            .map(|ip| http_common::client_key(ip).to_string());
        if let Some(ip) = ip {
            if !st.buckets.take(&format!("ip:{ip}")) {
                return too_many("too many requests from this address: slow down", 1);
            }
        }
        return next.run(req).await;
    };
    let row: Option<(String, String, String)> =
        match sqlx::query_as("SELECT id, tier, user_id FROM api_keys WHERE key_hash = $1")
            .bind(key_hash(&key))
            .fetch_optional(st.store.pool())
            .await
        {
            Ok(r) => r,
            Err(e) => return db(e).into_response(),
        };
    let Some((id, tier, user_id)) = row else {
        return ApiError::Unauthorized("unknown API key").into_response();
    };
    let tier = Tier::parse(&tier).unwrap_or(Tier::Free);
    if tier == Tier::Free && req.method() != Method::GET {
        return ApiError::Forbidden("free API keys are read-only (GET)").into_response();
    }
    // Burst and daily limits count per user: more keys do not buy more requests.
    if !st.buckets.take(&format!("user:{user_id}")) {
        return too_many("burst limit of this API key's user: slow down", 1);
    }
    let (retry, reset) = next_day();
    let day = now() / 86_400;
    if let Err(e) = sqlx::query(
        "INSERT INTO api_usage (key_id, day, requests) VALUES ($1, $2, 1) \
         ON CONFLICT (key_id, day) DO UPDATE SET requests = api_usage.requests + 1",
    )
    .bind(&id)
    .bind(day)
    .execute(st.store.pool())
    .await
    {
        return db(e).into_response();
    }
    let count: (i64,) = match sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(u.requests), 0) AS BIGINT) FROM api_usage u \
         JOIN api_keys k ON k.id = u.key_id WHERE k.user_id = $1 AND u.day = $2",
    )
    .bind(&user_id)
    .bind(day)
    .fetch_one(st.store.pool())
    .await
    {
        Ok(c) => c,
        Err(e) => return db(e).into_response(),
    };
    let mut resp = match tier.daily() {
        Some(limit) if count.0 > limit => {
            let mut r = too_many("daily quota of this API key's user used up", retry);
            set(&mut r, "x-ratelimit-limit", limit);
            set(&mut r, "x-ratelimit-remaining", 0);
            set(&mut r, "x-ratelimit-reset", reset);
            return r;
        }
        _ => next.run(req).await,
    };
    if let Some(limit) = tier.daily() {
        set(&mut resp, "x-ratelimit-limit", limit);
        set(&mut resp, "x-ratelimit-remaining", (limit - count.0).max(0));
        set(&mut resp, "x-ratelimit-reset", reset);
    }
    resp
}

/// `POST /api/keys` answer.
#[derive(Serialize, ToSchema)]
struct NewKeyOut {
    /// Key id (`key_...`).
    id: String,
    /// The key (`ak_...`), to send as `X-Api-Key`. Shown once.
    key: String,
    /// Always `free` for a new key.
    #[schema(example = "free")]
    tier: String,
}

/// One of your API keys.
#[derive(Serialize, ToSchema)]
struct KeyOut {
    /// Key id (`key_...`).
    id: String,
    /// `free`, `pro` or `enterprise`.
    #[schema(example = "free")]
    tier: String,
    /// Created (Unix seconds).
    created_at: i64,
    /// Requests counted today (UTC).
    requests_today: i64,
    /// Requests allowed a day; null: unlimited.
    #[schema(required = true)]
    daily_limit: Option<i64>,
}

/// `GET /api/keys` answer.
#[derive(Serialize, ToSchema)]
struct KeysOut {
    /// Oldest first.
    items: Vec<KeyOut>,
}

/// `POST /api/keys` (signed in): a new free-tier key, shown once. Tiers are raised by the
/// operator (`aethex api-key-tier ID TIER`).
#[utoipa::path(
    post,
    path = "/api/keys",
    tag = "keys",
    operation_id = "create_api_key",
    security(("bearer" = [])),
    responses(
        (status = 201, description = "A new free-tier key, shown once", body = NewKeyOut),
        (status = 409, description = "limits.api_keys_per_user keys already: delete one first", body = ErrorBody),
        Unauthorized,
    )
)]
pub async fn create(AxState(st): AxState<State>, user: User) -> Result<Response, ApiError> {
    let held: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM api_keys WHERE user_id = $1")
        .bind(&user.id)
        .fetch_one(st.store.pool())
        .await
        .map_err(db)?;
    let cap = st.guards.limits.api_keys_per_user;
    if usize::try_from(held.0).unwrap_or(usize::MAX) >= cap {
        st.guards.refused("api_keys_per_user");
        return Err(ApiError::Conflict(format!(
            "at most {cap} API keys per user: delete one first"
        )));
    }
    let id = format!("key_{}", random_hex(8)?);
    let key = format!("ak_{}", random_hex(24)?);
    sqlx::query(
        "INSERT INTO api_keys (id, user_id, key_hash, tier, created_at) VALUES ($1, $2, $3, 'free', $4)",
    )
    .bind(&id)
    .bind(&user.id)
    .bind(key_hash(&key))
    .bind(now())
    .execute(st.store.pool())
    .await
    .map_err(db)?;
    let body = NewKeyOut {
        id,
        key,
        tier: "free".into(),
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// `GET /api/keys` (signed in): your keys with today's usage.
#[utoipa::path(
    get,
    path = "/api/keys",
    tag = "keys",
    operation_id = "list_api_keys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Your keys with today's usage", body = KeysOut),
        Unauthorized,
    )
)]
pub async fn list(AxState(st): AxState<State>, user: User) -> Result<Response, ApiError> {
    let rows: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT k.id, k.tier, k.created_at, u.requests FROM api_keys k \
         LEFT JOIN api_usage u ON u.key_id = k.id AND u.day = $1 \
         WHERE k.user_id = $2 ORDER BY k.created_at, k.id",
    )
    .bind(now() / 86_400)
    .bind(&user.id)
    .fetch_all(st.store.pool())
    .await
    .map_err(db)?;
    let items = rows
        .into_iter()
        .map(|(id, tier, created_at, used)| KeyOut {
            daily_limit: Tier::parse(&tier).and_then(Tier::daily),
            id,
            tier,
            created_at,
            requests_today: used.unwrap_or(0),
        })
        .collect();
    Ok(axum::Json(KeysOut { items }).into_response())
}

/// `DELETE /api/keys/{id}` (its owner).
#[utoipa::path(
    delete,
    path = "/api/keys/{id}",
    tag = "keys",
    operation_id = "remove_api_key",
    params(("id" = String, Path, description = "Key id (`key_...`)")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked"),
        Unauthorized,
        (status = 404, description = "No such key of yours", body = ErrorBody),
    )
)]
pub async fn remove(
    AxState(st): AxState<State>,
    Path(id): Path<String>,
    user: User,
) -> Result<Response, ApiError> {
    let done = sqlx::query("DELETE FROM api_keys WHERE id = $1 AND user_id = $2")
        .bind(&id)
        .bind(&user.id)
        .execute(st.store.pool())
        .await
        .map_err(db)?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound(format!("no such API key: {id}")));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Set a key's tier (the operator's CLI). `false`: no such key.
pub async fn set_tier(store: &storage::Store, id: &str, tier: Tier) -> Result<bool, sqlx::Error> {
    let name = match tier {
        Tier::Free => "free",
        Tier::Pro => "pro",
        Tier::Enterprise => "enterprise",
    };
    let done = sqlx::query("UPDATE api_keys SET tier = $1 WHERE id = $2")
        .bind(name)
        .bind(id)
        .execute(store.pool())
        .await?;
    Ok(done.rows_affected() == 1)
}
