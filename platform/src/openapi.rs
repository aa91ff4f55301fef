//! The OpenAPI 3.1 document of the `/api` routes, served at `GET /api/openapi.json`.
//!
//! It is generated, never written by hand: every handler carries a `#[utoipa::path]` (method,
//! path, parameters, body, responses) and the router is built with `utoipa_axum`'s
//! `routes!`, which registers a handler and its description together, so a route cannot exist
//! without its entry. Request and response types derive `ToSchema`. What the quota middleware
//! in front of every route can answer (401/403 for API keys, 429, 500) and the optional
//! `X-Api-Key` are added to every operation here, once.

use std::sync::OnceLock;

use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, Header, OpenApi, Ref, ResponseBuilder};
use utoipa::{OpenApi as _, ToSchema};

/// Every error answer: `{"code": "...", "error": "..."}`.
// Only described here: the body is written by `http_common::ApiError::into_response`, and in the
// same shape by the quota middleware's 429 and the chat socket's handshake check.
#[derive(ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `too_large`, `unsupported_media_type`, `rate_limited`, `internal`, ...
    #[schema(example = "not_found")]
    pub code: String,
    /// For people; may change.
    #[schema(example = "no such channel: nosuch")]
    pub error: String,
}

// Path parameters and error answers that several handlers share, named in their `params(...)`
// and `responses(...)`. Only described here, never extracted or returned: a field's doc comment
// is its parameter's description, an answer's body is `ErrorBody`. Wording that is one
// handler's own (the 400 of its body or query, say) stays in that handler's annotation.

/// `{name}`: a channel.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ChannelPath {
    /// Channel name
    pub name: String,
}

/// `{name}/.../{user}`: a user in a channel (banned, a moderator).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ChannelUserPath {
    /// Channel name
    pub name: String,
    /// Name of the user concerned
    pub user: String,
}

/// `{id}` of a webhook.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WebhookPath {
    /// Webhook id (`wh_...`)
    pub id: String,
}

/// 401 of an operation that needs a session.
#[derive(utoipa::IntoResponses)]
#[response(status = 401, description = "No, unknown or expired session token")]
pub struct Unauthorized(pub ErrorBody);

/// 403 of an operation for the channel's owner.
#[derive(utoipa::IntoResponses)]
#[response(status = 403, description = "Not the channel's owner")]
pub struct NotOwner(pub ErrorBody);

/// 403 of a chat moderation for the channel's owner and moderators.
#[derive(utoipa::IntoResponses)]
#[response(status = 403, description = "Not the channel's owner or a moderator")]
pub struct NotModerator(pub ErrorBody);

/// 404 of an operation on `{name}`.
#[derive(utoipa::IntoResponses)]
#[response(status = 404, description = "No such channel")]
pub struct NoSuchChannel(pub ErrorBody);

/// 404 of an operation on `{name}` and `{user}`.
#[derive(utoipa::IntoResponses)]
#[response(status = 404, description = "No such channel or user")]
pub struct NoSuchChannelOrUser(pub ErrorBody);

/// 404 of an operation on a webhook's `{id}`.
#[derive(utoipa::IntoResponses)]
#[response(status = 404, description = "No such webhook on a channel of yours")]
pub struct NoSuchWebhook(pub ErrorBody);

/// 503 of an operation that hashes a password, when the hashing queue is full.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 503,
    description = "Too many password hashes queued (limits.password_hash_queue); retry after \
        the Retry-After seconds"
)]
pub struct HashBusy(pub ErrorBody);

/// 400 of a list's `?limit=&offset=` ([`crate::Page`]).
#[derive(utoipa::IntoResponses)]
#[response(status = 400, description = "Bad limit or offset")]
pub struct BadPage(pub ErrorBody);

/// 413 and 415: a JSON body refused before it is parsed (see [`crate::JsonBody`]). Its 400
/// (malformed JSON, and what the handler checks) is described by each handler.
#[derive(utoipa::IntoResponses)]
pub enum BodyRejected {
    /// Over the body limit of the API's routes.
    #[response(status = 413, description = "Body over 64 KiB")]
    TooLarge(ErrorBody),
    /// Without `Content-Type: application/json`.
    #[response(status = 415, description = "Content-Type is not application/json")]
    NotJson(ErrorBody),
}

/// Name of the session (`Authorization: Bearer`) security scheme.
pub const BEARER: &str = "bearer";
/// Name of the `X-Api-Key` security scheme.
pub const API_KEY: &str = "api_key";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "AeThex LIVE platform API",
        description = "Accounts, channels, follows, chat, webhooks, stream records and API keys. \
            Every error is JSON `{\"code\", \"error\"}` (schema `ErrorBody`). Sign in with \
            `POST /api/sessions` and send `Authorization: Bearer <token>`; a public API key \
            (`X-Api-Key`, from `POST /api/keys`) is optional on every route and counts the \
            request against the key's tier."
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "accounts", description = "Users and sessions"),
        (name = "channels", description = "Channels, stream keys, live now"),
        (name = "follows", description = "Following channels"),
        (name = "chat", description = "Chat over WebSocket and its moderation"),
        (name = "webhooks", description = "Webhooks of a channel and their deliveries"),
        (name = "streams", description = "Stream records and donations"),
        (name = "keys", description = "Public API keys and their quotas"),
        (name = "analytics", description = "Viewer numbers of a channel, for its owner"),
        (name = "stage", description = "Co-streaming: invites onto a channel's stage"),
        (name = "meta", description = "This document"),
    )
)]
struct Base;

/// The document before the routes are added: info, tags, shared schemas, security schemes.
pub(crate) fn base() -> OpenApi {
    let mut doc = Base::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A session token from `POST /api/sessions` or `POST /api/users`",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        API_KEY,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-Api-Key",
            "A public API key from `POST /api/keys`: optional; counts the request against \
             the key's tier (free: 10,000 a day, GET only; pro: 100,000 a day; enterprise: \
             unlimited) and adds `X-RateLimit-Limit`, `X-RateLimit-Remaining` and \
             `X-RateLimit-Reset` to the answer. It does not sign anyone in.",
        ))),
    );
    doc
}

/// The whole document: the routes' entries plus what the quota middleware adds to each.
pub fn openapi() -> OpenApi {
    let mut doc = crate::api_routes().into_openapi();
    for item in doc.paths.paths.values_mut() {
        let ops = [
            (Method::GET, &mut item.get),
            (Method::PUT, &mut item.put),
            (Method::POST, &mut item.post),
            (Method::DELETE, &mut item.delete),
            (Method::PATCH, &mut item.patch),
        ];
        for (method, op) in ops {
            if let Some(op) = op {
                add_quota_middleware(&method, op);
            }
        }
    }
    doc
}

/// A response whose body is [`ErrorBody`].
fn error(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    )
}

/// `X-Api-Key` is optional on every operation (alongside whatever else it needs), and the
/// quota middleware's answers are possible on every operation (see [`crate::quota`]).
fn add_quota_middleware(method: &Method, op: &mut Operation) {
    let needs = op
        .security
        .take()
        .unwrap_or_else(|| vec![Default::default()]);
    let mut with_key: Vec<SecurityRequirement> = Vec::new();
    for need in needs {
        with_key.push(need.clone());
        with_key.push(need.add(API_KEY, Vec::<String>::new()));
    }
    op.security = Some(with_key);

    let mut middleware = vec![
        ("401", "`X-Api-Key` is not a known API key"),
        (
            "429",
            "Over the burst limit (per API key or client address) or the key's daily quota",
        ),
        (
            "500",
            "Internal error (logged; the body says only `internal error`)",
        ),
    ];
    if method != Method::GET {
        middleware.push(("403", "Free API keys are read-only (GET)"));
    }
    for (status, why) in middleware {
        let responses = &mut op.responses.responses;
        match responses.get_mut(status) {
            Some(utoipa::openapi::RefOr::T(r)) => {
                r.description = format!("{}; or: {why}", r.description);
            }
            Some(utoipa::openapi::RefOr::Ref(_)) => {}
            None => {
                let mut r = error(why);
                if status == "429" {
                    let seconds = ObjectBuilder::new().schema_type(Type::Integer).build();
                    let mut retry = Header::new(seconds);
                    retry.description = Some("Seconds to wait before trying again".into());
                    r = r.header("Retry-After", retry);
                }
                responses.insert(status.to_string(), r.build().into());
            }
        }
    }
}

/// `GET /api/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    operation_id = "openapi_document",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of the platform API",
            content_type = "application/json", body = Object),
    )
)]
pub async fn document() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let json = DOC.get_or_init(|| {
        // An OpenApi value has only string keys and plain values: serialising cannot fail.
        serde_json::to_string(&openapi()).expect("the OpenAPI document serialises")
    });
    ([(header::CONTENT_TYPE, "application/json")], json.as_str()).into_response()
}
