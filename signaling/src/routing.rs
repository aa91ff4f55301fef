//! Where a WHEP viewer is served, and who may watch a private channel.
//!
//! - **Routing.** A viewer's region comes from `?region=R`, else an `X-Region` header (set by a
//!   CDN or geo proxy), else the node's `CIDR = region` rules on the client address. A node
//!   answers a viewer of another region with `307 Temporary Redirect` to the least-loaded
//!   healthy edge of that region in the registry, and serves the viewer itself when there is
//!   none. A node never redirects viewers of its own region, so redirects cannot loop.
//! - **Multi-origin.** With a shared (Redis) registry, a viewer asking an origin for a channel
//!   that is live at another origin is redirected there.
//! - **Draining.** A node shutting down sends new viewers to its upstream.
//! - **Playback tokens.** A private channel needs a token (`?token=` or `Authorization: Bearer`)
//!   signed with the cluster secret; it is checked here, offline.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cluster::{RegionRules, Registry, TokenError, TokenKey};

use crate::error::ApiError;

// Moved to http-common (the platform API reads them too); re-exported where they were.
pub use http_common::{bearer_token, ClientIp};

/// A text source appended to `/metrics` (the relay's series).
pub type MetricsText = Arc<dyn Fn() -> String + Send + Sync>;

/// This node's place in the cluster.
pub struct Cluster {
    /// This node's id in the registry.
    pub node_id: String,
    /// This node's region ("" when it has none).
    pub region: String,
    /// The registry of edges and live channels; `None` on a node that routes nobody.
    pub registry: Option<Registry>,
    /// `CIDR = region` rules.
    pub rules: RegionRules,
    /// Verifies playback tokens.
    pub tokens: TokenKey,
    /// More `/metrics` text (the relay's series).
    pub extra_metrics: Option<MetricsText>,
    draining: AtomicBool,
}

impl Cluster {
    /// A node's cluster settings; not draining.
    pub fn new(node_id: String, region: String, tokens: TokenKey) -> Self {
        Self {
            node_id,
            region,
            registry: None,
            rules: RegionRules::default(),
            tokens,
            extra_metrics: None,
            draining: AtomicBool::new(false),
        }
    }

    /// Stop taking viewers (they are sent upstream, or refused with 503).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether [`Cluster::start_draining`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// The first value of `key` in a query string (no percent-decoding: region names, layers and
/// tokens are URL-safe).
pub(crate) fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}

/// The viewer's region: `?region=`, else `X-Region`, else the address rules.
pub(crate) fn viewer_region(
    query: Option<&str>,
    headers: &HeaderMap,
    ip: Option<IpAddr>,
    rules: &RegionRules,
) -> Option<String> {
    let named = query_param(query, "region")
        .map(str::to_string)
        .or_else(|| {
            headers
                .get("x-region")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string())
        })
        .filter(|r| !r.is_empty());
    named.or_else(|| ip.and_then(|ip| rules.region_of(ip)).map(str::to_string))
}

/// Where to send a WHEP viewer instead of serving it here: an edge of their region.
pub(crate) async fn edge_for(
    cluster: &Cluster,
    region: Option<&str>,
) -> Result<Option<(String, String)>, ApiError> {
    let (Some(region), Some(registry)) = (region, &cluster.registry) else {
        return Ok(None);
    };
    if region == cluster.region {
        return Ok(None);
    }
    match registry.pick_edge(region, &cluster.node_id).await {
        Ok(edge) => Ok(edge.map(|e| (e.public_url, e.node_id))),
        // Routing is an optimisation: with the registry down, serve here.
        Err(e) => {
            tracing::warn!(error = %e, "registry unavailable; serving the viewer here");
            Ok(None)
        }
    }
}

/// The origin a channel is live at, when it is not this node (shared registry only).
pub(crate) async fn live_elsewhere(cluster: &Cluster, channel: &str) -> Option<(String, String)> {
    let registry = cluster.registry.as_ref()?;
    match registry.live(channel).await {
        Ok(Some(live)) if live.node_id != cluster.node_id => Some((live.public_url, live.node_id)),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "registry unavailable");
            None
        }
    }
}

/// `307 Temporary Redirect` to the same WHEP request at `base` (the method and the offer are
/// replayed by the client; the query, with its token and layer, is kept).
pub(crate) fn redirect(
    base: &str,
    channel: &str,
    query: Option<&str>,
    node: &str,
) -> Result<Response, ApiError> {
    let mut url = format!("{}/whep/{channel}", base.trim_end_matches('/'));
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(q);
    }
    let body = serde_json::json!({"redirect": url, "node": node});
    let mut resp = (StatusCode::TEMPORARY_REDIRECT, axum::Json(body)).into_response();
    resp.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&url).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    Ok(resp)
}

/// A viewer of a private channel must bring a valid token for it.
pub(crate) fn check_token(
    cluster: &Cluster,
    channel: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some(token) = query_param(query, "token").or(bearer_token(headers)) else {
        return Err(ApiError::Unauthorized(
            "this channel is private: a playback token is required (?token= or Authorization: Bearer)",
        ));
    };
    cluster
        .tokens
        .verify(token, channel, cluster::token::unix_now())
        .map(|_| ())
        .map_err(|e| {
            ApiError::Unauthorized(match e {
                TokenError::Malformed => "malformed playback token",
                TokenError::Algorithm => "playback token must be signed with HS256",
                TokenError::Signature => "playback token signature is invalid",
                TokenError::Expired => "playback token expired",
                TokenError::WrongChannel => "playback token is for another channel",
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_beats_the_header_which_beats_the_address_rules() {
        let rules = RegionRules::parse(&["127.0.0.0/8=lo"]).unwrap();
        let mut h = HeaderMap::new();
        let ip = Some("127.0.0.1".parse().unwrap());
        assert_eq!(viewer_region(None, &h, ip, &rules).as_deref(), Some("lo"));
        h.insert("x-region", HeaderValue::from_static("eu"));
        assert_eq!(viewer_region(None, &h, ip, &rules).as_deref(), Some("eu"));
        let q = Some("layer=low&region=us");
        assert_eq!(viewer_region(q, &h, ip, &rules).as_deref(), Some("us"));
        assert_eq!(viewer_region(None, &HeaderMap::new(), None, &rules), None);
    }

    #[test]
    fn a_redirect_keeps_the_query_and_is_absolute() {
        let r = redirect(
            "http://edge:8080/",
            "show",
            Some("token=abc&layer=low"),
            "e1",
        )
        .unwrap();
        assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            r.headers()[header::LOCATION],
            "http://edge:8080/whep/show?token=abc&layer=low"
        );
    }
}
