//! Chat over WebSocket at `GET /api/channels/{name}/chat` (`?token=` or `Authorization: Bearer`
//! signs in; anyone may read). On join: `{"type":"history","messages":[...]}` (the last 50).
//! Then the server sends `message`, `deleted` and `error` events, and a signed-in client sends
//! `{"type":"send","body":"..."}`. Every message is stored before it is broadcast, with a
//! server id and timestamp. Moderation (owner or moderators) is REST, in [`crate::moderation`]
//! and [`crate::queue`]; slow mode, blocked terms and what toxic messages get (flag or hold)
//! are channel fields. A held message goes only to its author and the channel's staff until
//! a moderator approves it (then to everyone, as a `message` with the same id) or rejects it.

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_common::ApiError;
use http_common::ClientIp;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::access::{may_see_private, role, Role};
use crate::accounts::{bearer_of, user_for_token, User};
use crate::chat_hub::{Limited, Reader, To};
use crate::openapi::{ChannelPath, ErrorBody, NoSuchChannel};
use crate::queue::ToxicityAction;
use crate::{db, QueryParams, State};

/// Messages sent on join.
const HISTORY: i64 = 50;
/// Longest message, in characters.
const MAX_BODY: usize = 500;

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A stored chat message as clients see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChatMessage {
    /// Message id (`m_...`).
    pub id: String,
    /// Its author's name.
    pub user: String,
    /// The text.
    pub body: String,
    /// When the server took it (ms since the Unix epoch).
    pub sent_at_ms: i64,
    /// `hate`, `offensive` or `neither`, and the probability that it is hate or offensive.
    pub toxicity: Score,
    /// `positive`, `neutral` or `negative`, and the polarity (-1 to 1).
    pub sentiment: Score,
    /// Waiting for a moderator (only its author and the channel's staff see it); absent when
    /// false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// Scored at or above the channel's threshold (only staff see the mark); absent when
    /// false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub flagged: bool,
}

/// The columns [`ChatMessage::from_row`] reads, in order.
pub(crate) const MESSAGE_COLUMNS: &str = "id, user_name, body, sent_at_ms, toxicity, \
     toxicity_score, sentiment, sentiment_score, status, flagged";

/// A row of [`MESSAGE_COLUMNS`].
pub(crate) type MessageRow = (
    String,
    String,
    String,
    i64,
    String,
    f64,
    String,
    f64,
    String,
    i64,
);

impl ChatMessage {
    /// From a row of [`MESSAGE_COLUMNS`]; the flag is shown only to `staff`.
    pub(crate) fn from_row(row: MessageRow, staff: bool) -> Self {
        let (id, user, body, sent_at_ms, tox, tox_score, sent, sent_score, status, flagged) = row;
        Self {
            id,
            user,
            body,
            sent_at_ms,
            toxicity: Score {
                label: tox,
                score: tox_score,
            },
            sentiment: Score {
                label: sent,
                score: sent_score,
            },
            held: status == "held",
            flagged: staff && flagged != 0,
        }
    }

    /// The `message` event.
    pub(crate) fn event(&self) -> String {
        event("message", serde_json::to_value(self).unwrap_or_default())
    }
}

/// A label and its score (docs/moderation.md).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Score {
    /// The label.
    pub label: String,
    /// Its score.
    pub score: f64,
}

impl Score {
    fn of(label: &str, score: f32) -> Self {
        // Three decimals are all a client can use; the stored and sent value agree.
        Self {
            label: label.to_string(),
            score: (f64::from(score) * 1000.0).round() / 1000.0,
        }
    }
}

/// The toxicity and sentiment of `text` (the model built into the binary).
pub(crate) fn scores(text: &str) -> Result<(Score, Score), ApiError> {
    let scorer = moderation::Scorer::builtin()
        .map_err(|e| ApiError::Internal(format!("the chat scoring model: {e}")))?;
    let s = scorer.score(text);
    Ok((
        Score::of(s.toxicity, s.toxicity_score),
        Score::of(s.sentiment.as_str(), s.sentiment_score),
    ))
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Incoming {
    Send { body: String },
}

pub(crate) fn event(kind: &str, fields: serde_json::Value) -> String {
    let mut v = fields;
    v["type"] = serde_json::Value::from(kind);
    v.to_string()
}

fn error_event(code: &str, message: &str) -> String {
    event("error", serde_json::json!({"code": code, "error": message}))
}

/// A channel's chat settings.
struct ChatSettings {
    slow: Duration,
    /// Lower-cased.
    blocked_terms: Vec<String>,
    action: ToxicityAction,
    threshold: f64,
}

async fn settings(st: &State, channel: &str) -> Result<ChatSettings, ApiError> {
    let row: Option<(i64, String, String, f64)> = sqlx::query_as(
        "SELECT slow_mode_secs, blocked_terms, toxicity_action, toxicity_threshold \
         FROM channels WHERE name = $1",
    )
    .bind(channel)
    .fetch_optional(st.store.pool())
    .await
    .map_err(db)?;
    let (slow, terms, action, threshold) =
        row.ok_or_else(|| ApiError::NotFound(format!("no such channel: {channel}")))?;
    let blocked_terms = terms
        .lines()
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    Ok(ChatSettings {
        slow: Duration::from_secs(slow.max(0) as u64),
        blocked_terms,
        // Only the API writes the column, and it writes a valid name.
        action: ToxicityAction::parse(&action).unwrap_or(ToxicityAction::Flag),
        threshold,
    })
}

/// Who reads a socket of `channel`: `user`, and whether they are its owner or a moderator.
async fn reader(st: &State, channel: &str, user: Option<&User>) -> Result<Reader, ApiError> {
    let Some(user) = user else {
        return Ok(Reader::default());
    };
    Ok(Reader {
        user: Some(user.id.clone()),
        staff: is_staff(st, channel, &user.id).await?,
    })
}

/// `user_id` is `channel`'s owner or one of its moderators.
async fn is_staff(st: &State, channel: &str, user_id: &str) -> Result<bool, ApiError> {
    Ok(matches!(
        role(st, channel, user_id).await?,
        Some(Role::Owner | Role::Moderator)
    ))
}

/// `GET /api/channels/{name}/chat`: upgrade to a chat socket.
///
/// On join the server sends `{"type":"history","messages":[...]}` (the last 50), then
/// `message`, `deleted`, `rejected`, `lagged` and `error` events (and to the owner and
/// moderators `reported` and `decided`); a signed-in client sends
/// `{"type":"send","body":"..."}` (1 to 500 characters). A `message` whose id the client
/// already holds replaces it (a held message, approved).
#[utoipa::path(
    get,
    path = "/api/channels/{name}/chat",
    tag = "chat",
    operation_id = "chat_socket",
    params(ChannelPath, TokenQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 101, description = "Switched to the chat WebSocket"),
        (status = 400, description = "Not a WebSocket handshake, or a malformed query string",
            body = ErrorBody),
        (status = 401, description = "Unknown or expired session token", body = ErrorBody),
        (status = 403, description = "A private channel: a playback token (?playback=), or \
            its owner or a moderator, is needed", body = ErrorBody),
        NoSuchChannel,
        (status = 429, description = "Too many chat sockets from this address \
            (limits.chat_sockets_per_ip)", body = ErrorBody),
        (status = 426, description = "This connection cannot be upgraded", body = ErrorBody),
    )
)]
pub async fn socket(
    AxState(st): AxState<State>,
    Path(channel): Path<String>,
    QueryParams(q): QueryParams<TokenQuery>,
    ClientIp(ip): ClientIp,
    headers: axum::http::HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => return Ok(not_a_handshake(e)),
    };
    settings(&st, &channel).await?;
    let token = q.token.as_deref().or(bearer_of(&headers));
    let user = match token {
        Some(t) => Some(user_for_token(&st, t).await?),
        None => None,
    };
    if is_private(&st, &channel).await?
        && !may_see_private(&st, &channel, &headers, token, q.playback.as_deref()).await?
    {
        return Err(ApiError::Forbidden(
            "this channel is private: its chat needs a playback token (?playback=), \
             or its owner or a moderator",
        ));
    }
    let slot = st.guards.chat_socket(ip)?;
    let session_token = token.map(str::to_string);
    // Chat frames are small: small buffers keep 10,000 sockets in tens of MB, not GB (the
    // defaults are 128 KiB each way), and each event is written at once.
    Ok(upgrade
        .max_message_size(8 * 1024)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        .on_upgrade(move |ws| async move {
            let _slot = slot;
            session(ws, st, channel, user, session_token).await
        }))
}

async fn is_private(st: &State, channel: &str) -> Result<bool, ApiError> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT private FROM channels WHERE name = $1")
        .bind(channel)
        .fetch_optional(st.store.pool())
        .await
        .map_err(db)?;
    Ok(row.is_some_and(|(p,)| p != 0))
}

/// axum's refusal of a request that is not a WebSocket handshake, as the API's JSON error.
fn not_a_handshake(e: WebSocketUpgradeRejection) -> Response {
    let status = e.status();
    let code = if status == StatusCode::UPGRADE_REQUIRED {
        "upgrade_required"
    } else {
        "bad_request"
    };
    let body = serde_json::json!({"code": code, "error": e.body_text()});
    (status, axum::Json(body)).into_response()
}

/// `?token=` for browsers, which cannot set headers on a WebSocket.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// Session token (instead of `Authorization: Bearer`); without one the socket only reads.
    token: Option<String>,
    /// Playback token of a private channel (its owner and moderators need none).
    playback: Option<String>,
}

/// The last messages `reader` may see: visible ones, and held ones to staff and their authors.
async fn history(st: &State, channel: &str, reader: &Reader) -> Result<Vec<ChatMessage>, ApiError> {
    let rows: Vec<MessageRow> = sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM chat_messages \
         WHERE channel = $1 AND deleted = 0 AND (status = 'visible' \
         OR (status = 'held' AND ($2 = 1 OR user_id = $3))) \
         ORDER BY sent_at_ms DESC, id DESC LIMIT $4"
    ))
    .bind(channel)
    .bind(i64::from(reader.staff))
    .bind(reader.user.as_deref().unwrap_or(""))
    .bind(HISTORY)
    .fetch_all(st.store.pool())
    .await
    .map_err(db)?;
    Ok(rows
        .into_iter()
        .rev()
        .map(|row| ChatMessage::from_row(row, reader.staff))
        .collect())
}

async fn session(
    mut ws: WebSocket,
    st: State,
    channel: String,
    mut user: Option<User>,
    session_token: Option<String>,
) {
    // Join before reading the history, so nothing falls between the two.
    let mut events = st.chat.join(&channel);
    // Silent sockets are closed: the server pings at a third of the idle timeout, and any
    // frame (a pong too) counts as life. A signed-in socket's session is re-checked at each
    // ping: signed out or expired, it goes on read-only.
    let idle = st.guards.limits.chat_idle_timeout;
    let mut ping = tokio::time::interval(idle / 3);
    ping.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    let Ok(mut reader) = reader(&st, &channel, user.as_ref()).await else {
        return;
    };
    let Ok(past) = history(&st, &channel, &reader).await else {
        return;
    };
    let hello = event("history", serde_json::json!({"messages": past}));
    if ws.send(Message::text(hello)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if last_heard.elapsed() >= idle {
                    let _ = ws.send(Message::Close(None)).await;
                    return;
                }
                if let (Some(_), Some(t)) = (&user, &session_token) {
                    if matches!(user_for_token(&st, t).await, Err(ApiError::Unauthorized(_))) {
                        user = None;
                    }
                    // Named or removed as a moderator since: the next events follow.
                    if let Ok(r) = self::reader(&st, &channel, user.as_ref()).await {
                        reader = r;
                    }
                }
                if ws.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            incoming = ws.recv() => {
                last_heard = tokio::time::Instant::now();
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let from = user.as_ref().map(|u| (u, reader.staff));
                let reply = match handle(&st, &channel, from, text.as_str()).await {
                    Ok(()) => None,
                    Err((code, message)) => Some(error_event(code, &message)),
                };
                if let Some(r) = reply {
                    if ws.send(Message::text(r)).await.is_err() {
                        return;
                    }
                }
            }
            ev = events.recv() => match ev {
                Ok(ev) if !reader.wants(&ev.to) => {}
                Ok(ev) => {
                    if ws.send(Message::Text(ev.text)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let lag = event("lagged", serde_json::json!({"missed": n}));
                    if ws.send(Message::text(lag)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// A client's frame: the body of its `{"type":"send","body":...}`, or why it is refused
/// (trimmed, 1 to 500 characters).
pub fn parse_frame(text: &str) -> Result<String, (&'static str, String)> {
    let Incoming::Send { body } = serde_json::from_str(text).map_err(|e| {
        (
            "bad_request",
            format!("expected {{\"type\":\"send\",\"body\":...}}: {e}"),
        )
    })?;
    let body = body.trim().to_string();
    if body.is_empty() || body.chars().count() > MAX_BODY {
        return Err((
            "bad_request",
            format!("a message is 1 to {MAX_BODY} characters"),
        ));
    }
    Ok(body)
}

/// One client frame from `user` (and whether they are staff): checks, score, store, broadcast
/// (or hold). `Err((code, message))` goes back to the sender.
async fn handle(
    st: &State,
    channel: &str,
    user: Option<(&User, bool)>,
    text: &str,
) -> Result<(), (&'static str, String)> {
    let body = parse_frame(text)?;
    let (user, staff) = user.ok_or(("unauthorized", "sign in to chat (?token=)".to_string()))?;
    let internal = |e: ApiError| ("internal", e.to_string());
    let chat = settings(st, channel).await.map_err(internal)?;
    let ban: Option<(Option<i64>,)> =
        sqlx::query_as("SELECT until_ms FROM chat_bans WHERE channel = $1 AND user_id = $2")
            .bind(channel)
            .bind(&user.id)
            .fetch_optional(st.store.pool())
            .await
            .map_err(|e| internal(db(e)))?;
    match ban {
        Some((None,)) => return Err(("banned", "you are banned from this chat".into())),
        Some((Some(until),)) if until > now_ms() => {
            return Err(("timed_out", format!("you are timed out until {until} (ms)")))
        }
        _ => {}
    }
    let lower = body.to_lowercase();
    if chat
        .blocked_terms
        .iter()
        .any(|t| lower.contains(t.as_str()))
    {
        return Err(("blocked_term", "the message contains a blocked term".into()));
    }
    match st.chat.admit(channel, &user.id, chat.slow) {
        Ok(()) => {}
        Err(Limited::Rate) => return Err(("rate_limited", "too many messages: slow down".into())),
        Err(Limited::Slow(d)) => {
            return Err((
                "slow_mode",
                format!("slow mode: wait {} s", d.as_secs() + 1),
            ))
        }
    }
    // Scored before it is stored and broadcast (well under a millisecond: docs/moderation.md).
    let (toxicity, sentiment) = scores(&body).map_err(internal)?;
    // The owner and moderators are never held or flagged.
    let over = !staff && toxicity.score >= chat.threshold;
    let held = over && chat.action == ToxicityAction::Hold;
    let flagged = over && chat.action == ToxicityAction::Flag;
    let sent_at_ms = now_ms();
    // Ids sort as the messages were taken: the time, then this node's sequence (two messages
    // in one millisecond), then random bytes (unique across nodes).
    static SEQUENCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & 0xffff;
    let id = format!(
        "m_{sent_at_ms:012x}{seq:04x}{}",
        crate::accounts::random_hex(4).map_err(internal)?
    );
    sqlx::query(
        "INSERT INTO chat_messages (id, channel, user_id, user_name, body, sent_at_ms, \
         toxicity, toxicity_score, sentiment, sentiment_score, status, flagged) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&id)
    .bind(channel)
    .bind(&user.id)
    .bind(&user.name)
    .bind(&body)
    .bind(sent_at_ms)
    .bind(&toxicity.label)
    .bind(toxicity.score)
    .bind(&sentiment.label)
    .bind(sentiment.score)
    .bind(if held { "held" } else { "visible" })
    .bind(i64::from(flagged))
    .execute(st.store.pool())
    .await
    .map_err(|e| internal(db(e)))?;
    let mut msg = ChatMessage {
        id,
        user: user.name.clone(),
        body,
        sent_at_ms,
        toxicity,
        sentiment,
        held,
        flagged: false,
    };
    if held {
        let to = To::StaffAnd(user.id.clone());
        st.chat.publish_to(channel, to, msg.event()).await;
    } else if flagged {
        // One copy for viewers, a marked one for the staff.
        st.chat.publish_to(channel, To::Viewers, msg.event()).await;
        msg.flagged = true;
        st.chat.publish_to(channel, To::Staff, msg.event()).await;
    } else {
        st.chat.publish(channel, msg.event()).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // The property `fuzz/fuzz_targets/chat_frames.rs` fuzzes, kept in CI.
        #[test]
        fn any_frame_is_parsed_or_refused_with_a_code(text in "\\PC{0,64}") {
            if let Err((code, message)) = parse_frame(&text) {
                prop_assert_eq!(code, "bad_request");
                prop_assert!(!message.is_empty());
            }
        }

        #[test]
        fn a_send_frame_gives_its_trimmed_body(body in "[a-z ]{0,600}") {
            let frame = serde_json::json!({"type": "send", "body": body}).to_string();
            let trimmed = body.trim();
            match parse_frame(&frame) {
                Ok(b) => prop_assert_eq!(b, trimmed),
                Err(_) => prop_assert!(trimmed.is_empty() || trimmed.chars().count() > MAX_BODY),
            }
        }
    }
}
