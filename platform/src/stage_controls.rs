//! The owner's controls of a live stage (docs/costreaming.md, "Host controls"): feature a
//! participant or go back to the active speaker, mute or unmute one, end the stage. What they
//! do to the media is the media side's ([`crate::LiveInfo::stage_control`]); they last while
//! the stage runs.

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_common::ApiError;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::accounts::User;
use crate::channels::owned;
use crate::openapi::{BodyRejected, ChannelPath, ErrorBody, NoSuchChannel, NotOwner, Unauthorized};
use crate::{JsonBody, StageControl, State};

/// Names the host in a control's `participant`.
pub const HOST: &str = "host";

/// `PUT /api/channels/{name}/stage/featured` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Featured {
    /// `host`, a guest's invite id, or `null` for the active speaker again.
    #[schema(required = true)]
    participant: Option<String>,
}

/// `POST /api/channels/{name}/stage/mute` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Mute {
    /// `host` or a guest's invite id.
    participant: String,
    /// `true` to mute, `false` to unmute.
    muted: bool,
}

/// `participant` as the media side names it (`None`: the host), if it is on `channel`'s stage
/// now.
async fn on_stage(
    st: &State,
    channel: &str,
    participant: &str,
) -> Result<Option<String>, ApiError> {
    let present = st.live.stage(channel).await;
    let found = if participant == HOST {
        present.iter().any(|p| p.invite.is_none() && p.live)
    } else {
        present
            .iter()
            .any(|p| p.invite.as_deref() == Some(participant) && p.live)
    };
    if !found {
        return Err(ApiError::NotFound(format!(
            "{participant} is not live on the stage of {channel}"
        )));
    }
    Ok((participant != HOST).then(|| participant.to_string()))
}

/// `PUT /api/channels/{name}/stage/featured` (owner): who one-section viewers see.
#[utoipa::path(
    put,
    path = "/api/channels/{name}/stage/featured",
    tag = "stage",
    operation_id = "feature_on_stage",
    params(ChannelPath),
    request_body = Featured,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Featured (or back to the active speaker)"),
        (status = 400, description = "Malformed JSON or an unknown field", body = ErrorBody),
        Unauthorized,
        NotOwner,
        (status = 404, description = "No such channel, or the participant is not live on its stage",
            body = ErrorBody),
        BodyRejected,
    )
)]
pub async fn feature(
    AxState(st): AxState<State>,
    Path(channel): Path<String>,
    user: User,
    JsonBody(body): JsonBody<Featured>,
) -> Result<Response, ApiError> {
    owned(&st, &channel, &user).await?;
    let pick = match &body.participant {
        Some(p) => Some(on_stage(&st, &channel, p).await?),
        None => None,
    };
    st.live
        .stage_control(&channel, StageControl::Feature(pick))
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/channels/{name}/stage/mute` (owner): mute or unmute a participant.
#[utoipa::path(
    post,
    path = "/api/channels/{name}/stage/mute",
    tag = "stage",
    operation_id = "mute_on_stage",
    params(ChannelPath),
    request_body = Mute,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Muted or unmuted: in the mix and in forwarding"),
        (status = 400, description = "Malformed JSON or an unknown field", body = ErrorBody),
        Unauthorized,
        NotOwner,
        (status = 404, description = "No such channel, or the participant is not live on its stage",
            body = ErrorBody),
        BodyRejected,
    )
)]
pub async fn mute(
    AxState(st): AxState<State>,
    Path(channel): Path<String>,
    user: User,
    JsonBody(body): JsonBody<Mute>,
) -> Result<Response, ApiError> {
    owned(&st, &channel, &user).await?;
    let who = on_stage(&st, &channel, &body.participant).await?;
    st.live
        .stage_control(&channel, StageControl::Mute(who, body.muted))
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /api/channels/{name}/stage` (owner): end the stage. Every active invite is revoked
/// and every guest's sessions end now; the host stays live.
#[utoipa::path(
    delete,
    path = "/api/channels/{name}/stage",
    tag = "stage",
    operation_id = "end_stage",
    params(ChannelPath),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Every invite revoked, every guest off the stage"),
        Unauthorized,
        NotOwner,
        NoSuchChannel,
    )
)]
pub async fn end_stage(
    AxState(st): AxState<State>,
    Path(channel): Path<String>,
    user: User,
) -> Result<Response, ApiError> {
    owned(&st, &channel, &user).await?;
    let invites = st
        .store
        .invites(&channel)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let now = storage::unix_now();
    for invite in invites.iter().filter(|i| i.admits(now)) {
        st.store
            .revoke_invite(&channel, &invite.id)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    for p in st.live.stage(&channel).await {
        if let Some(invite) = &p.invite {
            st.live.end_guest(&channel, invite).await;
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
