//! Trending terms: the words and emoji used in the most chat messages of a recent window, stop
//! words removed, per channel (`GET /api/channels/{name}/trending`) and across the public
//! channels (`GET /api/trending`). A term counts once per message, so one message repeating
//! a word does not make it trend. Read from the stored messages (the last 5,000 of the
//! window), so it holds across restarts and nodes.

use axum::extract::{Path, State as AxState};
use axum::response::{IntoResponse, Response};
use http_common::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::access::may_see_private;
use crate::chat::now_ms;
use crate::openapi::{ChannelPath, ErrorBody, NoSuchChannel};
use crate::{db, QueryParams, State};

/// Terms returned.
const TOP: usize = 20;
/// Messages read at most (the newest of the window).
const MAX_MESSAGES: i64 = 5_000;
/// Default and largest window, in minutes.
const DEFAULT_MINUTES: u32 = 60;
const MAX_MINUTES: u32 = 24 * 60;

/// Common English words and chat filler that say nothing about what is being talked about.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "because", "been", "but", "by", "can", "could", "did", "do", "does", "for", "from", "get",
    "got", "had", "has", "have", "he", "her", "here", "him", "his", "how", "i", "i'm", "if", "in",
    "into", "is", "it", "it's", "its", "just", "me", "my", "no", "not", "now", "of", "on", "one",
    "or", "our", "out", "rt", "she", "so", "some", "than", "that", "that's", "the", "their",
    "them", "then", "there", "they", "this", "to", "too", "up", "us", "was", "we", "were", "what",
    "when", "where", "which", "who", "why", "will", "with", "would", "you", "you're", "your",
    "@user", "url", "im", "u", "ur", "dont", "don't", "yes", "yeah", "ok",
];

/// `?minutes=`: the window.
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WindowQuery {
    /// The last this many minutes (1 to 1440; default 60).
    pub minutes: Option<u32>,
}

/// One trending term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Term {
    /// The word or emoji, as normalised (lower case).
    pub term: String,
    /// Messages of the window that use it.
    pub count: u64,
}

/// The answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Trending {
    /// The window, in minutes.
    pub window_minutes: u32,
    /// Messages read.
    pub messages: u64,
    /// The most used terms, most used first (ties by term).
    pub terms: Vec<Term>,
}

/// The `n` terms used in the most of `bodies`.
pub fn top_terms<'a>(bodies: impl IntoIterator<Item = &'a str>, n: usize) -> Vec<Term> {
    let mut counts: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for body in bodies {
        let mut terms = moderation::text::words(body);
        terms.retain(|t| {
            let short = t.chars().count() < 2 && t.chars().all(|c| c.is_alphanumeric());
            !short && !STOP_WORDS.contains(&t.as_str())
        });
        terms.sort_unstable();
        terms.dedup();
        for t in terms {
            *counts.entry(t).or_default() += 1;
        }
    }
    let mut terms: Vec<Term> = counts
        .into_iter()
        .map(|(term, count)| Term { term, count })
        .collect();
    terms.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.term.cmp(&b.term)));
    terms.truncate(n);
    terms
}

fn window(q: &WindowQuery) -> Result<u32, ApiError> {
    match q.minutes {
        None => Ok(DEFAULT_MINUTES),
        Some(m) if (1..=MAX_MINUTES).contains(&m) => Ok(m),
        Some(m) => Err(ApiError::BadRequest(format!(
            "minutes must be 1 to {MAX_MINUTES} (got {m})"
        ))),
    }
}

/// The trending terms of the last `minutes` of `channel`'s chat (`None`: every public
/// channel's).
async fn recent(st: &State, minutes: u32, channel: Option<&str>) -> Result<Response, ApiError> {
    let since = now_ms() - i64::from(minutes) * 60_000;
    // One query for both: `$3` is NULL for the platform.
    let bodies: Vec<(String,)> = sqlx::query_as(
        "SELECT m.body FROM chat_messages m JOIN channels c ON c.name = m.channel \
         WHERE m.deleted = 0 AND m.status = 'visible' AND m.sent_at_ms >= $1 \
         AND ((CAST($3 AS TEXT) IS NULL AND c.private = 0) OR m.channel = $3) \
         ORDER BY m.sent_at_ms DESC LIMIT $2",
    )
    .bind(since)
    .bind(MAX_MESSAGES)
    .bind(channel)
    .fetch_all(st.store.pool())
    .await
    .map_err(db)?;
    Ok(answer(minutes, bodies))
}

fn answer(minutes: u32, bodies: Vec<(String,)>) -> Response {
    let terms = top_terms(bodies.iter().map(|(b,)| b.as_str()), TOP);
    axum::Json(Trending {
        window_minutes: minutes,
        messages: bodies.len() as u64,
        terms,
    })
    .into_response()
}

/// `GET /api/trending`.
#[utoipa::path(
    get,
    path = "/api/trending",
    tag = "chat",
    params(WindowQuery),
    responses(
        (status = 200, description = "The terms of the public channels' recent chat", body = Trending),
        (status = 400, description = "minutes out of range or an unknown parameter", body = ErrorBody),
    )
)]
pub async fn platform(
    AxState(st): AxState<State>,
    QueryParams(q): QueryParams<WindowQuery>,
) -> Result<Response, ApiError> {
    recent(&st, window(&q)?, None).await
}

/// `GET /api/channels/{name}/trending` (a private channel's: its owner and moderators).
#[utoipa::path(
    get,
    path = "/api/channels/{name}/trending",
    tag = "chat",
    params(ChannelPath, WindowQuery),
    responses(
        (status = 200, description = "The terms of the channel's recent chat", body = Trending),
        (status = 400, description = "minutes out of range or an unknown parameter", body = ErrorBody),
        (status = 403, description = "A private channel, without its owner's or a moderator's session", body = ErrorBody),
        NoSuchChannel,
    )
)]
pub async fn channel(
    AxState(st): AxState<State>,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<WindowQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let minutes = window(&q)?;
    let private: Option<(i64,)> = sqlx::query_as("SELECT private FROM channels WHERE name = $1")
        .bind(&name)
        .fetch_optional(st.store.pool())
        .await
        .map_err(db)?;
    let Some((private,)) = private else {
        return Err(ApiError::NotFound(format!("no such channel: {name}")));
    };
    if private != 0 && !may_see_private(&st, &name, &headers, None, None).await? {
        return Err(ApiError::Forbidden(
            "this channel is private: its owner or moderators only",
        ));
    }
    recent(&st, minutes, Some(&name)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_count_once_per_message_without_stop_words() {
        let terms = top_terms(
            [
                "the boss fight is INSANE insane",
                "insane clutch 🔥",
                "what a clutch 🔥 lol",
                "a",
            ],
            3,
        );
        let got: Vec<(&str, u64)> = terms.iter().map(|t| (t.term.as_str(), t.count)).collect();
        assert_eq!(got, [("clutch", 2), ("insane", 2), ("🔥", 2)]);
        assert!(top_terms(["the and of"], 5).is_empty());
    }
}
