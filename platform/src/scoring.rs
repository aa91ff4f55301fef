//! `POST /api/moderation/score`: the scores a chat message would get (docs/moderation.md),
//! for bots and tests. Anyone may ask; the API's quotas apply (`X-Api-Key` tiers, and the
//! per-address burst limit without a key).

use axum::response::{IntoResponse, Response};
use http_common::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::chat::{scores, Score};
use crate::openapi::{BodyRejected, ErrorBody};
use crate::JsonBody;

/// Longest text scored, in characters (as a chat message).
const MAX_TEXT: usize = 500;

/// The text to score.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreBody {
    /// 1 to 500 characters.
    text: String,
}

/// What a chat message with that text would be labelled.
#[derive(Serialize, ToSchema)]
pub struct ScoreOut {
    /// `hate`, `offensive` or `neither`; `score`: the probability that it is hate or
    /// offensive (0 to 1).
    toxicity: Score,
    /// `positive`, `neutral` or `negative`; `score`: the polarity (-1 to 1).
    sentiment: Score,
}

/// `POST /api/moderation/score`.
#[utoipa::path(
    post,
    path = "/api/moderation/score",
    tag = "chat",
    request_body = ScoreBody,
    responses(
        (status = 200, description = "The scores", body = ScoreOut),
        (status = 400, description = "Malformed JSON, an unknown field, or an empty or \
            over-long text", body = ErrorBody),
        BodyRejected,
    )
)]
pub async fn score(JsonBody(b): JsonBody<ScoreBody>) -> Result<Response, ApiError> {
    let n = b.text.chars().count();
    if n == 0 || n > MAX_TEXT {
        return Err(ApiError::BadRequest(format!(
            "text must be 1 to {MAX_TEXT} characters (got {n})"
        )));
    }
    let (toxicity, sentiment) = scores(&b.text)?;
    Ok(axum::Json(ScoreOut {
        toxicity,
        sentiment,
    })
    .into_response())
}
