//! The session resource a WHIP/WHEP POST creates (`/whip/{channel}/{session}`,
//! `/whep/{channel}/{session}`): trickle and ICE restart (PATCH, RFC 9725 section 4.3-4.4),
//! the layer menu (`POST .../layer`), and teardown (DELETE).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::control::SfuControl;
use crate::error::{from_sfu, ApiError};
use crate::http::AppState;
use crate::request::{
    new_etag, parse_pin, read_text, require_content_type, sdp_attr, JSON, SDPFRAG,
};
use crate::sessions::{Kind, Session, Sessions};

#[derive(serde::Deserialize)]
struct LayerBody {
    layer: String,
}

/// `POST /whep/{channel}/{session}/layer` with `{"layer": "low|mid|high|auto"}`: the player's
/// quality menu.
pub(crate) async fn set_layer<C: SfuControl>(
    State(st): State<AppState<C>>,
    Path((channel, token)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_content_type(&headers, JSON)?;
    let session = session_for(&st.sessions, Kind::Whep, &channel, &token)?;
    let text = read_text(&headers, body, st.settings.max_body_bytes).await?;
    let parsed: LayerBody = serde_json::from_str(&text).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"layer\": \"low|mid|high|auto\"}}: {e}"
        ))
    })?;
    let pin = parse_pin(&parsed.layer)?;
    st.sfu
        .set_layer(session.peer, pin)
        .await
        .map_err(from_sfu)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) fn session_for(
    st_sessions: &Sessions,
    kind: Kind,
    channel: &str,
    token: &str,
) -> Result<Session, ApiError> {
    st_sessions
        .get(token)
        .filter(|s| s.kind == kind && s.channel == channel)
        .ok_or_else(|| ApiError::NotFound("no such session".into()))
}

pub(crate) fn kind_of(uri_path: &str) -> Kind {
    if uri_path.starts_with("/whip/") {
        Kind::Whip
    } else {
        Kind::Whep
    }
}

pub(crate) async fn patch_session<C: SfuControl>(
    State(st): State<AppState<C>>,
    Path((channel, token)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_content_type(&headers, SDPFRAG)?;
    let session = session_for(&st.sessions, kind_of(uri.path()), &channel, &token)?;
    if let Some(want) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        if want.trim() != "*" && want.trim() != session.etag {
            return Err(ApiError::PreconditionFailed);
        }
    }
    let frag = read_text(&headers, body, st.settings.max_body_bytes).await?;
    let candidates: Vec<String> = frag
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("a=candidate:"))
        .map(str::to_string)
        .collect();
    let limits = &st.admission.limits;
    if candidates.len() > limits.candidates_per_patch {
        st.metrics.refused("candidates");
        return Err(ApiError::BadRequest(format!(
            "{} candidates in one PATCH; at most {} (limits.candidates_per_patch)",
            candidates.len(),
            limits.candidates_per_patch
        )));
    }
    if session.candidates + candidates.len() > limits.candidates_per_session {
        st.metrics.refused("candidates");
        return Err(ApiError::BadRequest(format!(
            "at most {} trickled candidates per session (limits.candidates_per_session)",
            limits.candidates_per_session
        )));
    }
    let added = candidates.len();
    st.sessions.update(&token, |s| s.candidates += added);
    let ufrag = sdp_attr(&frag, "a=ice-ufrag:");
    let restart = ufrag.is_some() && ufrag != session.client_ufrag;
    if !restart {
        st.sfu
            .trickle(session.peer, candidates)
            .await
            .map_err(from_sfu)?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // RFC 9725 section 4.4: new credentials are an ICE restart, and the client must say
    // which session state it restarts (If-Match "*" or the current ETag).
    if headers.get(header::IF_MATCH).is_none() {
        return Err(ApiError::PreconditionRequired);
    }
    let (Some(ufrag), Some(pwd)) = (ufrag, sdp_attr(&frag, "a=ice-pwd:")) else {
        return Err(ApiError::BadRequest(
            "an ICE restart needs both a=ice-ufrag and a=ice-pwd".into(),
        ));
    };
    let restarted = st
        .sfu
        .restart_ice(session.peer, ufrag.clone(), pwd, candidates)
        .await
        .map_err(from_sfu)?;
    let etag = new_etag()?;
    let new_etag = etag.clone();
    st.sessions.update(&token, |s| {
        s.etag = new_etag;
        s.client_ufrag = Some(ufrag);
    });
    let mut body = format!(
        "a=ice-lite\r\na=ice-ufrag:{}\r\na=ice-pwd:{}\r\n",
        restarted.ufrag, restarted.pwd
    );
    for c in &restarted.candidates {
        body.push_str(c);
        body.push_str("\r\n");
    }
    body.push_str("a=end-of-candidates\r\n");
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDPFRAG));
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    Ok(resp)
}

pub(crate) async fn delete_session<C: SfuControl>(
    State(st): State<AppState<C>>,
    Path((channel, token)): Path<(String, String)>,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let session = session_for(&st.sessions, kind_of(uri.path()), &channel, &token)?;
    st.sessions.remove(&token);
    match st.sfu.close(session.peer).await {
        // Already gone on the media side (disconnected): the resource is gone too.
        Ok(()) | Err(sfu::SfuError::UnknownPeer) => Ok(StatusCode::OK.into_response()),
        Err(e) => Err(from_sfu(e)),
    }
}
