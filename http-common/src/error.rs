//! API errors: typed, mapped once to a status and a JSON body `{"code", "error"}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Everything an HTTP handler can fail with. Client mistakes are 4xx; only bugs are 500.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The body is not a usable SDP offer.
    #[error("{0}")]
    BadSdp(String),
    /// The viewer cannot receive the stream's codecs.
    #[error("{0}")]
    CodecMismatch(String),
    /// A request that is malformed in another way.
    #[error("{0}")]
    BadRequest(String),
    /// Content-Type is not what the endpoint takes.
    #[error("expected Content-Type {expected}")]
    UnsupportedMediaType {
        /// The accepted media type.
        expected: &'static str,
    },
    /// Missing or wrong bearer token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Signed in, but not allowed (not the owner).
    #[error("{0}")]
    Forbidden(&'static str),
    /// No such channel or session.
    #[error("{0}")]
    NotFound(String),
    /// The channel exists but nobody is publishing.
    #[error("channel {0} is offline")]
    Offline(String),
    /// The session changed (If-Match mismatch).
    #[error("the session's ETag does not match If-Match")]
    PreconditionFailed,
    /// An ICE restart PATCH without If-Match (RFC 9725 section 4.4).
    #[error("an ICE restart needs an If-Match header (\"*\" or the session's ETag)")]
    PreconditionRequired,
    /// A resource with that name exists.
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than the limit.
    #[error("request body over {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The node has no room; try again later (or elsewhere).
    #[error("the node is full; retry later")]
    Full,
    /// The node is draining (shutting down) and knows no other node to send viewers to.
    #[error("this node is shutting down; retry later")]
    Draining,
    /// The media engine or storage is unavailable (shutting down).
    #[error("service unavailable")]
    Unavailable,
    /// This node's role does not serve the request (an edge without the origin's database
    /// takes no publishers and serves no platform API); the message says where to go.
    #[error("{0}")]
    WrongRole(String),
    /// Too many requests or sessions from this client; retry after this many seconds.
    #[error("{message}")]
    RateLimited {
        /// What was exceeded.
        message: &'static str,
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
    /// A bounded queue is full (password hashing, connecting sessions): retry shortly.
    #[error("{0}")]
    Busy(&'static str),
    /// The request was not received in time.
    #[error("the request was not received within {0} ms")]
    Timeout(u64),
    /// A bug: logged with its cause, answered with a generic body.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// Status and stable machine-readable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadSdp(_) => (StatusCode::BAD_REQUEST, "bad_sdp"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::CodecMismatch(_) => (StatusCode::BAD_REQUEST, "codec_mismatch"),
            ApiError::UnsupportedMediaType { .. } => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Offline(_) => (StatusCode::NOT_FOUND, "offline"),
            ApiError::PreconditionFailed => {
                (StatusCode::PRECONDITION_FAILED, "precondition_failed")
            }
            ApiError::PreconditionRequired => {
                (StatusCode::PRECONDITION_REQUIRED, "precondition_required")
            }
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::Full => (StatusCode::SERVICE_UNAVAILABLE, "full"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
            ApiError::WrongRole(_) => (StatusCode::FORBIDDEN, "wrong_role"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            ApiError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(cause = %cause, "internal error");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let body = serde_json::json!({ "code": code, "error": message });
        let mut resp = (status, axum::Json(body)).into_response();
        let retry = match &self {
            ApiError::Full | ApiError::Unavailable | ApiError::Draining => Some(5),
            ApiError::Busy(_) => Some(1),
            ApiError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        if let Some(secs) = retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(e: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let resp = e.into_response();
        let status = resp.status();
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, retry, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn errors_are_json_with_a_stable_code_and_retry_after_where_a_retry_helps() {
        let (status, retry, body) = answer(ApiError::NotFound("no such channel: x".into())).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(retry, None);
        assert_eq!(
            body,
            serde_json::json!({"code": "not_found", "error": "no such channel: x"})
        );
        let limited = ApiError::RateLimited {
            message: "slow down",
            retry_after: 0,
        };
        let (status, retry, body) = answer(limited).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry.as_deref(), Some("1"), "at least one second");
        assert_eq!(body["code"], "rate_limited");
        let (status, retry, _) = answer(ApiError::Full).await;
        assert_eq!(
            (status, retry.as_deref()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("5"))
        );
    }

    #[tokio::test]
    async fn an_internal_error_hides_its_cause() {
        let (status, _, body) = answer(ApiError::Internal("database: secret detail".into())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body,
            serde_json::json!({"code": "internal", "error": "internal error"})
        );
    }
}
