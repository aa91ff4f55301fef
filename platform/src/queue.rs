//! The moderation queue: chat messages held by the toxicity model (a channel's
//! `toxicity_action` is `hold`) and messages viewers reported wait here until the owner or a
//! moderator approves or rejects them. Every decision is recorded with what the model said,
//! as training data for the next model (docs/moderation.md).
//!
//! Approving a held message sends it to everyone (a `message` event with its id); rejecting it
//! tells only its author and the staff (`rejected`). Rejecting a reported message deletes it
//! for everyone (`deleted`); approving it closes its reports. Staff sockets also get
//! `reported` and `decided`, so a moderator's view of the queue follows without polling.

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_common::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::access::{may_see_private, PlaybackQuery};
use crate::accounts::User;
use crate::chat::{event, now_ms, ChatMessage, MessageRow, Score, MESSAGE_COLUMNS};
use crate::chat_hub::To;
use crate::moderation::may_moderate;
use crate::openapi::{BadPage, BodyRejected, ChannelPath, ErrorBody, NotModerator, Unauthorized};
use crate::{db, JsonBody, Page, Paged, QueryParams, State};

/// What a channel does with a message the model scores at or above its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToxicityAction {
    /// Nothing.
    Off,
    /// Broadcast it, marked `flagged` for the owner and moderators.
    Flag,
    /// Hold it in the queue: only its author and the staff see it until a moderator decides.
    Hold,
}

impl ToxicityAction {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Flag => "flag",
            Self::Hold => "hold",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Self::Off),
            "flag" => Some(Self::Flag),
            "hold" => Some(Self::Hold),
            _ => None,
        }
    }
}

/// Longest report reason, in characters.
const MAX_REASON: usize = 200;

/// A message in the queue.
#[derive(Serialize, ToSchema)]
pub struct QueueItem {
    /// The message (`held` when the model held it).
    message: ChatMessage,
    /// Why it is here: `held` (the model) or `reported` (viewers).
    source: String,
    /// Its open reports, oldest first.
    reports: Vec<ReportOut>,
}

/// A viewer's report.
#[derive(Serialize, ToSchema)]
pub struct ReportOut {
    /// Who reported it.
    user: String,
    /// Their reason (may be empty).
    reason: String,
    /// When (ms since the Unix epoch).
    reported_at_ms: i64,
}

/// A recorded decision.
#[derive(Serialize, ToSchema)]
pub struct DecisionOut {
    /// The message decided on.
    message_id: String,
    /// `approved` or `rejected`.
    decision: String,
    /// `held` or `reported`.
    source: String,
    /// Open reports it had.
    reports: i64,
    /// What the model said of it.
    toxicity: Score,
    /// The moderator's name.
    by: String,
    /// When (ms since the Unix epoch).
    decided_at_ms: i64,
}

/// `POST .../report` body.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    /// Why (at most 200 characters; may be left out).
    #[schema(max_length = 200)]
    reason: Option<String>,
}

/// `POST .../report` answer.
#[derive(Serialize, ToSchema)]
pub struct ReportedOut {
    /// The message reported.
    id: String,
    /// Its open reports now.
    reports: i64,
}

/// The queue's messages of `channel`: held ones, and visible ones with open reports.
const QUEUED: &str = "FROM chat_messages m WHERE m.channel = $1 AND m.deleted = 0 AND \
     (m.status = 'held' OR (m.status = 'visible' AND EXISTS (SELECT 1 FROM chat_reports r \
     WHERE r.message_id = m.id AND r.open = 1)))";

/// `GET /api/channels/{name}/moderation/queue` (owner or moderator).
#[utoipa::path(
    get,
    path = "/api/channels/{name}/moderation/queue",
    tag = "chat",
    params(ChannelPath, Page),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Held and reported messages, oldest first",
            body = Paged<QueueItem>),
        BadPage,
        Unauthorized,
        NotModerator,
        (status = 404, description = "No such channel", body = ErrorBody),
    )
)]
pub async fn list(
    AxState(st): AxState<State>,
    Path(channel): Path<String>,
    QueryParams(page): QueryParams<Page>,
    user: User,
) -> Result<Response, ApiError> {
    let (limit, offset) = page.bounds()?;
    may_moderate(&st, &channel, &user, false).await?;
    let pool = st.store.pool();
    let (total,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) {QUEUED}"))
        .bind(&channel)
        .fetch_one(pool)
        .await
        .map_err(db)?;
    let columns = MESSAGE_COLUMNS.replace(", ", ", m.");
    let rows: Vec<MessageRow> = sqlx::query_as(&format!(
        "SELECT m.{columns} {QUEUED} ORDER BY m.sent_at_ms, m.id LIMIT $2 OFFSET $3"
    ))
    .bind(&channel)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let message = ChatMessage::from_row(row, true);
        let reports: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT u.name, r.reason, r.reported_at_ms FROM chat_reports r \
             JOIN users u ON u.id = r.user_id WHERE r.message_id = $1 AND r.open = 1 \
             ORDER BY r.reported_at_ms, u.name",
        )
        .bind(&message.id)
        .fetch_all(pool)
        .await
        .map_err(db)?;
        items.push(QueueItem {
            source: if message.held { "held" } else { "reported" }.into(),
            message,
            reports: reports
                .into_iter()
                .map(|(user, reason, reported_at_ms)| ReportOut {
                    user,
                    reason,
                    reported_at_ms,
                })
                .collect(),
        });
    }
    Ok(axum::Json(Paged { total, items }).into_response())
}

/// `POST /api/channels/{name}/moderation/queue/{id}/approve` (owner or moderator).
#[utoipa::path(
    post,
    path = "/api/channels/{name}/moderation/queue/{id}/approve",
    tag = "chat",
    params(ChannelPath, ("id" = String, Path, description = "Message id (`m_...`)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Approved and recorded: a held message goes to everyone, \
            a reported one's reports are closed", body = DecisionOut),
        Unauthorized,
        NotModerator,
        (status = 404, description = "No such channel or message", body = ErrorBody),
        (status = 409, description = "The message is not in the queue (decided already)",
            body = ErrorBody),
    )
)]
pub async fn approve(
    AxState(st): AxState<State>,
    Path((channel, id)): Path<(String, String)>,
    user: User,
) -> Result<Response, ApiError> {
    decide(&st, &channel, &id, &user, true).await
}

/// `POST /api/channels/{name}/moderation/queue/{id}/reject` (owner or moderator).
#[utoipa::path(
    post,
    path = "/api/channels/{name}/moderation/queue/{id}/reject",
    tag = "chat",
    params(ChannelPath, ("id" = String, Path, description = "Message id (`m_...`)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Rejected and recorded: a held message is never shown, \
            a reported one is deleted for everyone", body = DecisionOut),
        Unauthorized,
        NotModerator,
        (status = 404, description = "No such channel or message", body = ErrorBody),
        (status = 409, description = "The message is not in the queue (decided already)",
            body = ErrorBody),
    )
)]
pub async fn reject(
    AxState(st): AxState<State>,
    Path((channel, id)): Path<(String, String)>,
    user: User,
) -> Result<Response, ApiError> {
    decide(&st, &channel, &id, &user, false).await
}

/// Approve (`approve`) or reject message `id` of `channel`: one transaction whose conditional
/// updates make a second moderator deciding at the same time get a 409.
async fn decide(
    st: &State,
    channel: &str,
    id: &str,
    user: &User,
    approve: bool,
) -> Result<Response, ApiError> {
    may_moderate(st, channel, user, false).await?;
    let found: Option<(String, String, i64, String, f64)> = sqlx::query_as(
        "SELECT user_id, status, deleted, toxicity, toxicity_score FROM chat_messages \
         WHERE id = $1 AND channel = $2",
    )
    .bind(id)
    .bind(channel)
    .fetch_optional(st.store.pool())
    .await
    .map_err(db)?;
    let (author, status, deleted, toxicity, toxicity_score) =
        found.ok_or_else(|| ApiError::NotFound(format!("no such message: {id}")))?;
    let not_queued = || ApiError::Conflict(format!("message {id} is not in the queue"));
    let source = match (status.as_str(), deleted) {
        ("held", 0) => "held",
        ("visible", 0) => "reported",
        _ => return Err(not_queued()),
    };
    let decision = if approve { "approved" } else { "rejected" };
    let mut tx = st.store.pool().begin().await.map_err(db)?;
    let changed = match (source, approve) {
        ("held", true) => Some("UPDATE chat_messages SET status = 'visible' WHERE id = $1 AND status = 'held'"),
        ("held", false) => Some("UPDATE chat_messages SET status = 'rejected' WHERE id = $1 AND status = 'held'"),
        (_, false) => Some("UPDATE chat_messages SET status = 'rejected', deleted = 1 WHERE id = $1 AND deleted = 0"),
        (_, true) => None,
    };
    if let Some(sql) = changed {
        let done = sqlx::query(sql)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(not_queued());
        }
    }
    let closed = sqlx::query("UPDATE chat_reports SET open = 0 WHERE message_id = $1 AND open = 1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected() as i64;
    if source == "reported" && closed == 0 {
        return Err(not_queued());
    }
    let decided_at_ms = now_ms();
    sqlx::query(
        "INSERT INTO moderation_decisions (message_id, channel, decision, source, reports, \
         toxicity, toxicity_score, by_user, decided_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(channel)
    .bind(decision)
    .bind(source)
    .bind(closed)
    .bind(&toxicity)
    .bind(toxicity_score)
    .bind(&user.id)
    .bind(decided_at_ms)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;

    let hub = &st.chat;
    match (source, approve) {
        ("held", true) => {
            let row: MessageRow = sqlx::query_as(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE id = $1"
            ))
            .bind(id)
            .fetch_one(st.store.pool())
            .await
            .map_err(db)?;
            let msg = ChatMessage::from_row(row, false);
            hub.publish(channel, msg.event()).await;
        }
        ("held", false) => {
            let ev = event("rejected", serde_json::json!({"id": id}));
            hub.publish_to(channel, To::StaffAnd(author), ev).await;
        }
        (_, false) => {
            hub.publish(channel, event("deleted", serde_json::json!({"id": id})))
                .await;
        }
        (_, true) => {}
    }
    let decided = serde_json::json!({"id": id, "decision": decision, "source": source});
    hub.publish_to(channel, To::Staff, event("decided", decided))
        .await;
    Ok(axum::Json(DecisionOut {
        message_id: id.to_string(),
        decision: decision.into(),
        source: source.into(),
        reports: closed,
        toxicity: Score {
            label: toxicity,
            score: toxicity_score,
        },
        by: user.name.clone(),
        decided_at_ms,
    })
    .into_response())
}

/// `GET /api/channels/{name}/moderation/decisions` (owner or moderator).
#[utoipa::path(
    get,
    path = "/api/channels/{name}/moderation/decisions",
    tag = "chat",
    params(ChannelPath, Page),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every decision on the queue, newest first",
            body = Paged<DecisionOut>),
        BadPage,
        Unauthorized,
        NotModerator,
        (status = 404, description = "No such channel", body = ErrorBody),
    )
)]
pub async fn decisions(
    AxState(st): AxState<State>,
    Path(channel): Path<String>,
    QueryParams(page): QueryParams<Page>,
    user: User,
) -> Result<Response, ApiError> {
    let (limit, offset) = page.bounds()?;
    may_moderate(&st, &channel, &user, false).await?;
    let pool = st.store.pool();
    let (total,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM moderation_decisions WHERE channel = $1")
            .bind(&channel)
            .fetch_one(pool)
            .await
            .map_err(db)?;
    type Row = (String, String, String, i64, String, f64, String, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT d.message_id, d.decision, d.source, d.reports, d.toxicity, d.toxicity_score, \
         COALESCE(u.name, ''), d.decided_at_ms FROM moderation_decisions d \
         LEFT JOIN users u ON u.id = d.by_user WHERE d.channel = $1 \
         ORDER BY d.decided_at_ms DESC, d.message_id LIMIT $2 OFFSET $3",
    )
    .bind(&channel)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let items = rows
        .into_iter()
        .map(
            |(message_id, decision, source, reports, label, score, by, decided_at_ms)| {
                DecisionOut {
                    message_id,
                    decision,
                    source,
                    reports,
                    toxicity: Score { label, score },
                    by,
                    decided_at_ms,
                }
            },
        )
        .collect();
    Ok(axum::Json(Paged { total, items }).into_response())
}

/// `POST /api/channels/{name}/chat/{id}/report` (signed in).
#[utoipa::path(
    post,
    path = "/api/channels/{name}/chat/{id}/report",
    tag = "chat",
    params(ChannelPath, ("id" = String, Path, description = "Message id (`m_...`)"),
        PlaybackQuery),
    request_body = ReportBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Reported: the message is in the moderation queue",
            body = ReportedOut),
        (status = 200, description = "You had reported it already (a report counts once, also \
            after a moderator's decision)",
            body = ReportedOut),
        (status = 400, description = "Malformed JSON, an unknown field, a reason over 200 \
            characters, or your own message", body = ErrorBody),
        Unauthorized,
        (status = 403, description = "A private channel: a playback token (?playback=) is \
            needed", body = ErrorBody),
        (status = 404, description = "No such channel, or no such message shown in it",
            body = ErrorBody),
        BodyRejected,
    )
)]
pub async fn report(
    AxState(st): AxState<State>,
    Path((channel, id)): Path<(String, String)>,
    QueryParams(q): QueryParams<PlaybackQuery>,
    user: User,
    headers: axum::http::HeaderMap,
    JsonBody(b): JsonBody<ReportBody>,
) -> Result<Response, ApiError> {
    let reason = b.reason.unwrap_or_default().trim().to_string();
    if reason.chars().count() > MAX_REASON {
        return Err(ApiError::BadRequest(format!(
            "reason: at most {MAX_REASON} characters"
        )));
    }
    let pool = st.store.pool();
    let private: Option<(i64,)> = sqlx::query_as("SELECT private FROM channels WHERE name = $1")
        .bind(&channel)
        .fetch_optional(pool)
        .await
        .map_err(db)?;
    let (private,) =
        private.ok_or_else(|| ApiError::NotFound(format!("no such channel: {channel}")))?;
    if private != 0
        && !may_see_private(&st, &channel, &headers, None, q.playback.as_deref()).await?
    {
        return Err(ApiError::Forbidden(
            "this channel is private: its chat needs a playback token (?playback=)",
        ));
    }
    let author: Option<(String,)> = sqlx::query_as(
        "SELECT user_id FROM chat_messages WHERE id = $1 AND channel = $2 AND deleted = 0 \
         AND status = 'visible'",
    )
    .bind(&id)
    .bind(&channel)
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    let (author,) = author.ok_or_else(|| ApiError::NotFound(format!("no such message: {id}")))?;
    if author == user.id {
        return Err(ApiError::BadRequest(
            "you cannot report your own message".into(),
        ));
    }
    // One report per user and message: after a moderator decided, the same user's report
    // does not bring it back (others' do).
    let added = sqlx::query(
        "INSERT INTO chat_reports (message_id, user_id, reason, reported_at_ms, open) \
         VALUES ($1, $2, $3, $4, 1) ON CONFLICT (message_id, user_id) DO NOTHING",
    )
    .bind(&id)
    .bind(&user.id)
    .bind(&reason)
    .bind(now_ms())
    .execute(pool)
    .await
    .map_err(db)?
    .rows_affected()
        > 0;
    let (reports,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM chat_reports WHERE message_id = $1 AND open = 1")
            .bind(&id)
            .fetch_one(pool)
            .await
            .map_err(db)?;
    if added {
        let ev = event(
            "reported",
            serde_json::json!({"id": id, "reports": reports}),
        );
        st.chat.publish_to(&channel, To::Staff, ev).await;
    }
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(ReportedOut { id, reports })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_action_round_trips_through_its_stored_name() {
        for a in [
            ToxicityAction::Off,
            ToxicityAction::Flag,
            ToxicityAction::Hold,
        ] {
            assert_eq!(ToxicityAction::parse(a.as_str()), Some(a));
            let json = serde_json::to_value(a).unwrap();
            assert_eq!(json, a.as_str());
        }
        assert_eq!(ToxicityAction::parse("block"), None);
    }
}
