//! WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep) endpoints, health and metrics.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sfu::{PeerId, Pin, SubscribeOptions};

use crate::control::{Availability, ChannelSource, SfuControl};
use crate::error::{from_sfu, ApiError};
use crate::limits::{retry_secs, Admission};
use crate::metrics::Metrics;
use crate::request::{
    bearer, new_etag, new_token, parse_channel, parse_pin, read_text, require_content_type,
    sdp_attr, SDP,
};
use crate::resource::{delete_session, patch_session, set_layer};
use crate::routing::{self, ClientIp, Cluster};
use crate::sessions::{Kind, Refusal, Session, Sessions, Ticket};
use crate::web;
use storage::Store;

/// A STUN or TURN server announced to clients in `Link: rel="ice-server"` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:host:port` or `turn:host:port?transport=udp`.
    pub url: String,
    /// TURN username.
    pub username: Option<String>,
    /// TURN password.
    pub credential: Option<String>,
}

/// HTTP-side settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Largest accepted request body (SDP offers, trickle fragments).
    pub max_body_bytes: usize,
    /// Servers announced with `Link: rel="ice-server"`.
    pub ice_servers: Vec<IceServer>,
    /// `Some(why)`: this node takes no publishers (an edge without the origin's database);
    /// WHIP answers 403 with `why`.
    pub refuse_publishers: Option<String>,
    /// A token `/metrics` requires (`Authorization: Bearer`); empty: open.
    pub metrics_token: String,
    /// Serve `/metrics` on the main listener (false: only on [`metrics_router`]'s own).
    pub metrics_on_main: bool,
    /// The longest a request may take from its headers to the response (408 beyond).
    pub request_timeout: std::time::Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            ice_servers: Vec::new(),
            refuse_publishers: None,
            metrics_token: String::new(),
            metrics_on_main: true,
            request_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// The longest User-Agent kept with a viewer session (longer ones are cut).
const MAX_AGENT: usize = 256;

/// Everything the handlers share.
pub struct AppState<C> {
    /// The media engine.
    pub sfu: C,
    /// Channels and keys.
    pub store: Store,
    /// Live session resources.
    pub sessions: Arc<Sessions>,
    /// Settings.
    pub settings: Arc<HttpSettings>,
    /// Prometheus registry.
    pub metrics: Arc<Metrics>,
    /// At an edge: the upstream that WHEP requests pull channels from.
    pub upstream: Option<Arc<dyn ChannelSource>>,
    /// Routing, playback tokens, draining.
    pub cluster: Arc<Cluster>,
    /// Admission limits and their state.
    pub admission: Arc<Admission>,
    /// What the live stages' drivers say (featured, speaking).
    pub stages: Arc<crate::stage_board::StageBoard>,
}

impl<C: Clone> Clone for AppState<C> {
    fn clone(&self) -> Self {
        Self {
            sfu: self.sfu.clone(),
            store: self.store.clone(),
            sessions: self.sessions.clone(),
            settings: self.settings.clone(),
            metrics: self.metrics.clone(),
            upstream: self.upstream.clone(),
            cluster: self.cluster.clone(),
            admission: self.admission.clone(),
            stages: self.stages.clone(),
        }
    }
}

/// The whole HTTP surface.
pub fn router<C: SfuControl>(state: AppState<C>) -> Router {
    router_with(state, Router::new())
}

/// The HTTP surface with more routes (the platform API) under the same CORS and 404 handling.
pub fn router_with<C: SfuControl>(state: AppState<C>, extra: Router) -> Router {
    let trusted = Arc::new(state.admission.limits.trusted_proxies.clone());
    let timeout = crate::protect::RequestTimeout(state.settings.request_timeout);
    let mut routes = Router::new();
    if state.settings.metrics_on_main {
        routes = routes.route("/metrics", get(metrics::<C>));
    }
    routes
        .route("/healthz", get(healthz::<C>))
        .route("/whip", post(whip_by_key::<C>))
        .route("/whip/{channel}", post(whip_by_channel::<C>))
        .route(
            "/whip/{channel}/{session}",
            axum::routing::patch(patch_session::<C>).delete(delete_session::<C>),
        )
        .route("/whep/{channel}", post(whep::<C>))
        .route(
            "/whep/{channel}/{session}",
            axum::routing::patch(patch_session::<C>).delete(delete_session::<C>),
        )
        .route("/whep/{channel}/{session}/layer", post(set_layer::<C>))
        .route(
            "/whep/{channel}/{session}/stage",
            get(crate::stage_map::snapshot::<C>),
        )
        .route(
            "/whep/{channel}/{session}/stage/events",
            get(crate::stage_map::events::<C>),
        )
        .route("/watch/{channel}", get(web::watch))
        .route("/live", get(web::live))
        .route("/stage/{channel}", get(web::stage))
        .route("/static/{file}", get(web::asset))
        .route("/", get(web::index))
        .with_state(state)
        .merge(extra)
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(axum::middleware::from_fn_with_state(
            timeout,
            crate::protect::request_timeout,
        ))
        .layer(axum::middleware::from_fn(crate::protect::security_headers))
        .layer(axum::middleware::from_fn(cors))
        .layer(axum::middleware::from_fn_with_state(
            trusted,
            crate::limits::remember_client,
        ))
}

/// `/metrics` alone, for `http.metrics_listen` (scrapers on a private address).
pub fn metrics_router<C: SfuControl>(state: AppState<C>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::<C>))
        .with_state(state)
        .fallback(|| async { ApiError::NotFound("only /metrics is served here".into()) })
}

const EXPOSED: &str = "Location, ETag, Link, Retry-After, Accept-Post, X-Aethex-Channel";

/// CORS for browser clients on other origins (any origin: WHIP/WHEP resources are protected by
/// bearer keys and unguessable session URLs, not by cookies). An `OPTIONS` request is answered
/// here, preflight or not, with the WHIP/WHEP `Accept-Post` header.
async fn cors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut resp = if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert("accept-post", HeaderValue::from_static(SDP));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type, If-Match"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED),
    );
    resp
}

async fn healthz<C: SfuControl>(State(st): State<AppState<C>>) -> Response {
    let ready = st.store.ping().await.is_ok() && st.sfu.stats().await.is_ok();
    if ready {
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ok"})),
        )
            .into_response()
    } else {
        ApiError::Unavailable.into_response()
    }
}

async fn metrics<C: SfuControl>(
    State(st): State<AppState<C>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let want = &st.settings.metrics_token;
    if !want.is_empty() {
        let given = bearer(&headers).unwrap_or("");
        if !crate::limits::same_secret(given, want) {
            return Err(ApiError::Unauthorized(
                "/metrics needs Authorization: Bearer <http.metrics_token>",
            ));
        }
    }
    let stats = st.sfu.stats().await.map_err(from_sfu)?;
    let mut private = HashSet::new();
    for s in &stats.streams {
        if channel_is_private(&st, &s.name).await {
            private.insert(s.name.clone());
        }
    }
    let mut text = st.metrics.render(&stats, &private);
    if let Some(extra) = &st.cluster.extra_metrics {
        text.push_str(&extra());
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// Whether `channel` is private here (an edge asks what its upstream said; an unreadable
/// store counts as private: nothing is shown by mistake).
pub(crate) async fn channel_is_private<C>(st: &AppState<C>, channel: &str) -> bool {
    match &st.upstream {
        Some(source) => source.is_private(channel),
        None => !matches!(st.store.is_private(channel).await, Ok(Some(false))),
    }
}

/// Turn an admission refusal into its error, counted.
fn refused(st_metrics: &Metrics, r: Refusal) -> ApiError {
    match r {
        Refusal::PerAddress => {
            st_metrics.refused("sessions_per_ip");
            ApiError::RateLimited {
                message: "too many sessions from this address (limits.sessions_per_ip)",
                retry_after: 10,
            }
        }
        Refusal::Pending => {
            st_metrics.refused("pending_sessions");
            ApiError::Busy("too many sessions are connecting; retry shortly")
        }
    }
}

/// The offer-rate and session checks every WHIP/WHEP POST passes before any work.
pub(crate) fn admit<C>(
    st: &AppState<C>,
    ip: Option<std::net::IpAddr>,
    kind: Kind,
) -> Result<Ticket, ApiError> {
    let key = st.admission.key(ip);
    if let Err(wait) = st.admission.offer(key) {
        st.metrics.refused("offer_rate");
        return Err(ApiError::RateLimited {
            message: "too many offers from this address (limits.offers_per_sec)",
            retry_after: retry_secs(wait),
        });
    }
    st.sessions
        .admit(key, kind == Kind::Whep, &st.admission.limits)
        .map_err(|r| refused(&st.metrics, r))
}

async fn whip_by_key<C: SfuControl>(
    State(st): State<AppState<C>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    refuse_publishers(&st)?;
    require_content_type(&headers, SDP)?;
    let key = bearer(&headers)?;
    let ticket = admit(&st, ip, Kind::Whip)?;
    let channel = st
        .store
        .channel_for_key(key)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or(ApiError::Unauthorized("invalid stream key"))?;
    let offer = read_text(&headers, body, st.settings.max_body_bytes).await?;
    publish(&st, channel, key, offer, ticket).await
}

/// An edge without the origin's database refuses publishers: a channel name there means
/// nothing, and a local publisher would take over what the upstream relays.
fn refuse_publishers<C>(st: &AppState<C>) -> Result<(), ApiError> {
    match &st.settings.refuse_publishers {
        Some(why) => {
            st.metrics.refused("wrong_role");
            Err(ApiError::WrongRole(why.clone()))
        }
        None => Ok(()),
    }
}

async fn whip_by_channel<C: SfuControl>(
    State(st): State<AppState<C>>,
    Path(channel): Path<String>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    refuse_publishers(&st)?;
    require_content_type(&headers, SDP)?;
    let stream = parse_channel(&channel)?;
    let key = bearer(&headers)?;
    let ticket = admit(&st, ip, Kind::Whip)?;
    if key.starts_with(crate::stage::INVITE_PREFIX) {
        let offer = read_text(&headers, body, st.settings.max_body_bytes).await?;
        return crate::stage::publish_guest(&st, stream, key, offer, ticket).await;
    }
    let owner = st
        .store
        .channel_for_key(key)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if owner.as_deref() != Some(channel.as_str()) {
        let exists = st
            .store
            .channel_exists(&channel)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if !exists {
            return Err(ApiError::NotFound(format!("no such channel: {channel}")));
        }
        return Err(ApiError::Unauthorized(
            "invalid stream key for this channel",
        ));
    }
    let offer = read_text(&headers, body, st.settings.max_body_bytes).await?;
    publish(&st, channel, key, offer, ticket).await
}

async fn publish<C: SfuControl>(
    st: &AppState<C>,
    channel: String,
    key: &str,
    offer: String,
    ticket: Ticket,
) -> Result<Response, ApiError> {
    let stream = parse_channel(&channel)?;
    let account = st
        .store
        .owner_of(&channel)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(owner) = &account {
        let cap = st.admission.limits.publishers_per_account;
        if st.sessions.published_by(owner, &channel) >= cap {
            st.metrics.refused("publishers_per_account");
            return Err(ApiError::RateLimited {
                message: "this account publishes limits.publishers_per_account channels already",
                retry_after: 30,
            });
        }
    }
    let ufrag = sdp_attr(&offer, "a=ice-ufrag:");
    let published = st.sfu.publish(stream, offer).await.map_err(from_sfu)?;
    if let Some(old) = published.replaced {
        st.sessions.forget_peer(old);
    }
    let new = NewSession {
        kind: Kind::Whip,
        channel,
        peer: published.peer,
        client_ufrag: ufrag,
        client: None,
        tokened: false,
        account,
        key: Some(storage::key_fingerprint(key)),
        guest: None,
        stage: false,
    };
    created(st, new, published.answer, ticket)
}

async fn whep<C: SfuControl>(
    State(st): State<AppState<C>>,
    Path(channel): Path<String>,
    RawQuery(query): RawQuery,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_content_type(&headers, SDP)?;
    let stream = parse_channel(&channel)?;
    let layer = layer_from_query(query.as_deref())?;
    let q = query.as_deref();
    if st.cluster.is_draining() {
        // Shutting down: new viewers go upstream (or retry later).
        return match st.upstream.as_ref().and_then(|u| u.upstream_url()) {
            Some(url) => routing::redirect(&url, &channel, q, "upstream"),
            None => Err(ApiError::Draining),
        };
    }
    // A stage's participants (an invite, or the host's stream key) watch each other at the
    // origin, which knows the invites and keys and is a relay hop closer to the others: an
    // edge sends them there.
    if let Some(source) = &st.upstream {
        if http_common::bearer_token(&headers).is_some_and(crate::stage::is_participant_token) {
            return match source.upstream_url() {
                Some(url) => routing::redirect(&url, &channel, q, "upstream"),
                None => Err(ApiError::Unavailable),
            };
        }
    }
    let region = routing::viewer_region(q, &headers, ip, &st.cluster.rules);
    if let Some((url, node)) = routing::edge_for(&st.cluster, region.as_deref()).await? {
        return routing::redirect(&url, &channel, q, &node);
    }
    let ticket = admit(&st, ip, Kind::Whep)?;
    let offer = read_text(&headers, body, st.settings.max_body_bytes).await?;
    // Only a plausible offer may make an edge subscribe upstream (junk must cost nothing).
    let sections = media_core::sdp::media_sections(&offer)
        .map_err(|e| ApiError::BadSdp(format!("bad SDP offer: {e}")))?;
    if sections.is_empty() {
        return Err(ApiError::BadSdp(
            "a WHEP offer needs an audio or video media section".into(),
        ));
    }
    let private = match &st.upstream {
        // An edge has no channel table: its upstream knows which channels exist, are live and
        // are private.
        Some(source) => match source.ensure(&channel).await {
            Availability::Live { private } => private,
            Availability::Offline => return Err(ApiError::Offline(channel)),
        },
        None => {
            if !st.sfu.is_live(stream.clone()).await.map_err(from_sfu)? {
                if let Some((url, node)) = routing::live_elsewhere(&st.cluster, &channel).await {
                    return routing::redirect(&url, &channel, q, &node);
                }
            }
            st.store
                .is_private(&channel)
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .ok_or_else(|| ApiError::NotFound(format!("no such channel: {channel}")))?
        }
    };
    // A stage: participants watch the others, viewers with several video sections see the
    // guests too.
    let token = http_common::bearer_token(&headers);
    let watch = crate::stage::watch(&st, &stream, token, &sections).await?;
    // A viewer with a valid token keeps watching if the channel turns private later; a
    // participant is let in by its invite or key.
    let tokened = watch.participant.is_some()
        || match routing::check_token(&st.cluster, &channel, q, &headers) {
            Ok(()) => true,
            Err(e) if private => return Err(e),
            Err(_) => false,
        };
    let ufrag = sdp_attr(&offer, "a=ice-ufrag:");
    let agent: String = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(MAX_AGENT)
        .collect();
    let options = SubscribeOptions {
        layer,
        also: watch.also,
        open: watch.open,
    };
    let subscribed = st
        .sfu
        .subscribe(watch.first, offer, options)
        .await
        .map_err(|e| match e {
            // A participant's stage may have no one else live yet: name the channel.
            sfu::SfuError::Offline(_) if watch.participant.is_some() => ApiError::NotFound(
                format!("no other participant of the stage of {channel} is live"),
            ),
            e => from_sfu(e),
        })?;
    let (guest, key) = match watch.participant {
        Some(crate::stage::Participant::Guest(g)) => (Some(g), None),
        Some(crate::stage::Participant::Host(k)) => (None, Some(k)),
        None => (None, None),
    };
    let new = NewSession {
        kind: Kind::Whep,
        channel,
        peer: subscribed.peer,
        client_ufrag: ufrag,
        client: Some(format!(
            "{}\n{agent}",
            ip.map(|i| i.to_string()).unwrap_or_default()
        )),
        tokened,
        account: None,
        key,
        guest,
        stage: watch.pairs > 1,
    };
    created(&st, new, subscribed.answer, ticket)
}

/// The `layer` query parameter of a WHEP request (`?layer=low|mid|high|auto`).
fn layer_from_query(query: Option<&str>) -> Result<Pin, ApiError> {
    routing::query_param(query, "layer").map_or(Ok(Pin::Auto), parse_pin)
}

/// What a new session resource records.
pub(crate) struct NewSession {
    pub kind: Kind,
    pub channel: String,
    pub peer: PeerId,
    pub client_ufrag: Option<String>,
    pub client: Option<String>,
    pub tokened: bool,
    pub account: Option<String>,
    pub key: Option<String>,
    pub guest: Option<crate::sessions::Guest>,
    /// A WHEP session with more than one section pair.
    pub stage: bool,
}

pub(crate) fn created<C>(
    st: &AppState<C>,
    new: NewSession,
    answer: String,
    ticket: Ticket,
) -> Result<Response, ApiError> {
    let token = new_token()?;
    // Drawn apart from the token: an ETag is readable by scripts (CORS-exposed), a token
    // is the resource's only secret.
    let etag = new_etag()?;
    let prefix = if new.kind == Kind::Whip {
        "whip"
    } else {
        "whep"
    };
    let channel = new.channel;
    let location = format!("/{prefix}/{channel}/{token}");
    let session = Session {
        peer: new.peer,
        channel: channel.clone(),
        kind: new.kind,
        etag: etag.clone(),
        client_ufrag: new.client_ufrag,
        client: new.client,
        counted_as: ticket.counted_as(),
        connected: false,
        candidates: 0,
        tokened: new.tokened,
        account: new.account,
        key: new.key,
        guest: new.guest,
        stage: new.stage,
    };
    st.sessions.insert(token, session, ticket);
    let mut resp = (StatusCode::CREATED, answer).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    if let Ok(v) = HeaderValue::from_str(&channel) {
        h.insert(header::HeaderName::from_static("x-aethex-channel"), v);
    }
    for server in &st.settings.ice_servers {
        if let Ok(v) = HeaderValue::from_str(&link_value(server)) {
            h.append(header::LINK, v);
        }
    }
    Ok(resp)
}

/// `Link` header value for one ICE server (RFC 9725 section 4.6).
fn link_value(s: &IceServer) -> String {
    let mut v = format!("<{}>; rel=\"ice-server\"", s.url);
    if let (Some(user), Some(cred)) = (&s.username, &s.credential) {
        v.push_str(&format!(
            "; username=\"{user}\"; credential=\"{cred}\"; credential-type=\"password\""
        ));
    }
    v
}
