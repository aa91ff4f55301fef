//! Users and sessions. Passwords are hashed with Argon2id (PHC strings); a session is a random
//! bearer token of which only the SHA-256 is stored, with an expiry.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{FromRequestParts, State as AxState};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_common::ApiError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::openapi::{BodyRejected, ErrorBody, HashBusy, Unauthorized};
use crate::{db, now, JsonBody, State};

/// A signed-in user, from `Authorization: Bearer <session token>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User id.
    pub id: String,
    /// User name.
    pub name: String,
}

pub(crate) fn random_hex(bytes: usize) -> Result<String, ApiError> {
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).map_err(|e| ApiError::Internal(format!("random source: {e}")))?;
    Ok(hex::encode(raw))
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// User and channel names: 1-32 of `a-z 0-9 - _`.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn bearer(parts: &Parts) -> Option<&str> {
    bearer_of(&parts.headers)
}

/// The user a session token belongs to (401 when unknown or expired).
pub(crate) async fn user_for_token(st: &State, token: &str) -> Result<User, ApiError> {
    let row: Option<(String, String, i64)> = sqlx::query_as(
        "SELECT u.id, u.name, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.token_hash = $1",
    )
    .bind(token_hash(token))
    .fetch_optional(st.store.pool())
    .await
    .map_err(db)?;
    match row {
        Some((id, name, expires)) if expires > now() => Ok(User { id, name }),
        Some(_) => Err(ApiError::Unauthorized("session expired: sign in again")),
        None => Err(ApiError::Unauthorized("unknown session token")),
    }
}

impl FromRequestParts<State> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &State) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized(
            "sign in: Authorization: Bearer <session token> (POST /api/sessions)",
        ))?;
        user_for_token(st, token).await
    }
}

/// The bearer token of a request, if any.
pub(crate) fn bearer_of(headers: &axum::http::HeaderMap) -> Option<&str> {
    http_common::bearer_token(headers)
}

/// `POST /api/users` and `POST /api/sessions` body.
#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    /// User name: 1-32 of `a-z 0-9 - _`.
    #[schema(pattern = "^[a-z0-9_-]{1,32}$")]
    name: String,
    /// 8 to 128 characters.
    #[schema(min_length = 8, max_length = 128)]
    password: String,
}

/// A new session.
#[derive(Serialize, ToSchema)]
struct SessionOut {
    user: UserOut,
    /// Bearer token (`st_...`): send it as `Authorization: Bearer <token>`. Shown once.
    token: String,
    /// When it stops working (Unix seconds).
    expires_at: i64,
}

/// A user.
#[derive(Serialize, ToSchema)]
struct UserOut {
    /// User id (`u_...`).
    id: String,
    /// User name.
    name: String,
}

/// `GET /api/me` answer.
#[derive(Serialize, ToSchema)]
struct MeOut {
    /// User id (`u_...`).
    id: String,
    /// User name.
    name: String,
    /// Names of the channels this user owns, sorted.
    channels: Vec<String>,
}

fn hash_password(password: &str) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| ApiError::Internal(format!("random source: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| ApiError::Internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(format!("argon2: {e}")))
}

fn password_ok(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

async fn new_session(st: &State, user: UserOut) -> Result<Response, ApiError> {
    let token = format!("st_{}", random_hex(32)?);
    let expires_at = now() + st.settings.session_ttl_secs;
    sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(token_hash(&token))
    .bind(&user.id)
    .bind(now())
    .bind(expires_at)
    .execute(st.store.pool())
    .await
    .map_err(db)?;
    let out = SessionOut {
        user,
        token,
        expires_at,
    };
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

/// `POST /api/users {name, password}`: register, and sign in (201 with a session).
#[utoipa::path(
    post,
    path = "/api/users",
    tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 201, description = "Registered and signed in", body = SessionOut),
        (status = 400, description = "Malformed JSON, or a bad name or password", body = ErrorBody),
        (status = 409, description = "The user name is taken", body = ErrorBody),
        BodyRejected,
        HashBusy,
    )
)]
pub async fn register(
    AxState(st): AxState<State>,
    JsonBody(c): JsonBody<Credentials>,
) -> Result<Response, ApiError> {
    if !valid_name(&c.name) {
        return Err(ApiError::BadRequest(
            "name: 1-32 characters of a-z, 0-9, '-' and '_'".into(),
        ));
    }
    if !(8..=128).contains(&c.password.chars().count()) {
        return Err(ApiError::BadRequest("password: 8 to 128 characters".into()));
    }
    let password = c.password;
    // Deliberately slow (tens of ms, 19 MiB): bounded, off the async workers.
    let hash = st.guards.hash(move || hash_password(&password)).await??;
    let id = format!("u_{}", random_hex(12)?);
    let inserted = sqlx::query(
        "INSERT INTO users (id, name, password_hash, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&id)
    .bind(&c.name)
    .bind(&hash)
    .bind(now())
    .execute(st.store.pool())
    .await;
    match inserted {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(ApiError::Conflict(format!("user name {} is taken", c.name)))
        }
        Err(e) => return Err(db(e)),
    }
    new_session(&st, UserOut { id, name: c.name }).await
}

/// `POST /api/sessions {name, password}`: sign in (201 with a session token).
#[utoipa::path(
    post,
    path = "/api/sessions",
    tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 201, description = "Signed in", body = SessionOut),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Wrong user name or password", body = ErrorBody),
        HashBusy,
        BodyRejected,
    )
)]
pub async fn login(
    AxState(st): AxState<State>,
    JsonBody(c): JsonBody<Credentials>,
) -> Result<Response, ApiError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT id, password_hash FROM users WHERE name = $1")
            .bind(&c.name)
            .fetch_optional(st.store.pool())
            .await
            .map_err(db)?;
    // The same work whether or not the user exists: no timing oracle for user names.
    let stored = row
        .as_ref()
        .map(|(_, h)| h.clone())
        .unwrap_or_else(dummy_hash);
    let password = c.password;
    let ok = st
        .guards
        .hash(move || password_ok(&password, &stored))
        .await?;
    match row {
        Some((id, _)) if ok => new_session(&st, UserOut { id, name: c.name }).await,
        _ => Err(ApiError::Unauthorized("wrong user name or password")),
    }
}

/// An Argon2id hash verified against when the user does not exist (made once per process).
fn dummy_hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("no-such-user-password").unwrap_or_default())
        .clone()
}

/// `DELETE /api/sessions`: sign out (this session).
#[utoipa::path(
    delete,
    path = "/api/sessions",
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out"),
        Unauthorized,
    )
)]
pub async fn logout(
    AxState(st): AxState<State>,
    _user: User,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let token = bearer_of(&headers).unwrap_or_default().to_string();
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
        .bind(token_hash(&token))
        .execute(st.store.pool())
        .await
        .map_err(db)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/me`: who is signed in, and their channels.
#[utoipa::path(
    get,
    path = "/api/me",
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The signed-in user", body = MeOut),
        Unauthorized,
    )
)]
pub async fn me(AxState(st): AxState<State>, user: User) -> Result<Response, ApiError> {
    let channels: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM channels WHERE owner_id = $1 ORDER BY name")
            .bind(&user.id)
            .fetch_all(st.store.pool())
            .await
            .map_err(db)?;
    let body = MeOut {
        id: user.id,
        name: user.name,
        channels: channels.into_iter().map(|(n,)| n).collect(),
    };
    Ok(axum::Json(body).into_response())
}
