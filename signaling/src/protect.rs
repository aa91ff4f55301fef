//! Response hardening for every route: security headers (CSP, framing, referrer, sniffing),
//! `Cache-Control: no-store` on everything that is not a static asset or page (answers carry
//! session URLs, stream keys, tokens), and a whole-request timeout (a client that trickles its
//! body forever is cut off; WebSocket upgrades are exempt: they have their own idle timeout).

use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The Content-Security-Policy of the web client's pages: scripts, styles and images from this
/// node only; media signaling may reach other nodes (a viewer is redirected to an edge); never
/// framed.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self' http: https: ws: wss:; object-src 'none'; \
base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Paths whose responses may be cached (static assets and the pages that load them).
fn cacheable(path: &str) -> bool {
    path.starts_with("/static/") || path == "/" || path == "/live" || path.starts_with("/watch/")
}

/// Middleware: add the security headers.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let cache = cacheable(req.uri().path());
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !cache && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Middleware state: the longest a request (headers read to response) may take.
#[derive(Debug, Clone, Copy)]
pub struct RequestTimeout(pub Duration);

/// Middleware: answer 408 when a request is not done in time (WebSocket upgrades exempt).
pub async fn request_timeout(
    axum::extract::State(limit): axum::extract::State<RequestTimeout>,
    req: Request,
    next: Next,
) -> Response {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if upgrade {
        return next.run(req).await;
    }
    match tokio::time::timeout(limit.0, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::Timeout(limit.0.as_millis() as u64).into_response(),
    }
}
