//! Reading a signaling request: content types, bearer tokens, bounded bodies, names, SDP
//! attributes; and the random tokens a session resource is named by.

use axum::body::Body;
use axum::http::{header, HeaderMap};
use sfu::{Pin, StreamId};

use crate::error::ApiError;

pub(crate) const SDP: &str = "application/sdp";
pub(crate) const SDPFRAG: &str = "application/trickle-ice-sdpfrag";
pub(crate) const JSON: &str = "application/json";

pub(crate) fn require_content_type(
    headers: &HeaderMap,
    expected: &'static str,
) -> Result<(), ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType { expected })
    }
}

pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(
            "missing Authorization: Bearer <stream key>",
        ))?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header"))?;
    let (scheme, token) = text
        .split_once(' ')
        .ok_or(ApiError::Unauthorized("malformed Authorization header"))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::Unauthorized(
            "expected Authorization: Bearer <stream key>",
        ));
    }
    Ok(token)
}

pub(crate) async fn read_text(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<String, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge { limit });
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::TooLarge { limit })?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::BadSdp("the body is not UTF-8 text".into()))
}

pub(crate) fn parse_channel(name: &str) -> Result<StreamId, ApiError> {
    StreamId::new(name).map_err(|_| ApiError::NotFound(format!("no such channel: {name}")))
}

pub(crate) fn new_token() -> Result<String, ApiError> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| ApiError::Internal(format!("random source: {e}")))?;
    Ok(hex::encode(raw))
}

pub(crate) fn new_etag() -> Result<String, ApiError> {
    Ok(format!("\"{}\"", &new_token()?[..16]))
}

pub(crate) fn parse_pin(value: &str) -> Result<Pin, ApiError> {
    Pin::parse(value).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "unknown layer {value:?}: use low, mid, high or auto"
        ))
    })
}

/// The first value of an SDP attribute line (`a=ice-ufrag:` ...), trimmed.
pub(crate) fn sdp_attr(sdp: &str, prefix: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}
