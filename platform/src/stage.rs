//! Co-streaming stages, the platform side: the channel's owner invites guests onto its stage,
//! lists and revokes the invites. A guest joins with its invite token as the WHIP/WHEP bearer
//! (the media side reads the invite through `storage::stage`).

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_common::ApiError;
use serde::{Deserialize, Serialize};
use storage::{check_invite, Invite};
use utoipa::ToSchema;

use crate::accounts::User;
use crate::channels::owned;
use crate::openapi::{BodyRejected, ChannelPath, ErrorBody, NoSuchChannel, NotOwner, Unauthorized};
use crate::{JsonBody, State};

/// A guest's name when the owner gives none.
pub const DEFAULT_NAME: &str = "guest";
/// An invite's lifetime when the owner gives none: one day.
pub const DEFAULT_TTL_S: i64 = 24 * 3600;

/// `POST /api/channels/{name}/stage/invites` body (both fields optional).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInvite {
    /// The guest's display name on the stage, 1-64 characters (default `guest`).
    #[schema(min_length = 1, max_length = 64)]
    name: Option<String>,
    /// Seconds the invite admits its guest, 60 to 604800 (default 86400).
    #[schema(minimum = 60, maximum = 604800)]
    ttl_s: Option<i64>,
}

/// A new invite: its token is shown once.
#[derive(Serialize, ToSchema)]
pub struct NewInviteOut {
    /// The invite's id (to revoke it).
    id: String,
    /// The guest's bearer token for `POST /whip/{channel}` and `POST /whep/{channel}`.
    token: String,
    /// The co-stream page for the guest, with the token.
    join_url: String,
    /// Unix seconds after which the token admits no one.
    expires_at: i64,
}

/// One invite as its channel's owner sees it (never its token).
#[derive(Serialize, ToSchema)]
pub struct InviteOut {
    /// The invite's id.
    id: String,
    /// The guest's display name.
    name: String,
    /// Unix seconds.
    created_at: i64,
    /// Unix seconds.
    expires_at: i64,
    /// Unix seconds, when revoked.
    #[schema(required = true)]
    revoked_at: Option<i64>,
    /// It still admits its guest (not expired, not revoked).
    active: bool,
}

impl From<Invite> for InviteOut {
    fn from(i: Invite) -> Self {
        let active = i.admits(crate::now());
        Self {
            id: i.id,
            name: i.name,
            created_at: i.created_at,
            expires_at: i.expires_at,
            revoked_at: i.revoked_at,
            active,
        }
    }
}

/// `GET /api/channels/{name}/stage/invites` answer.
#[derive(Serialize, ToSchema)]
pub struct InvitesOut {
    /// Newest first, expired and revoked ones included.
    items: Vec<InviteOut>,
}

/// `GET /api/channels/{name}/stage` answer.
#[derive(Serialize, ToSchema)]
pub struct StageOut {
    /// Guests a stage holds beside its host.
    max_guests: usize,
    /// The host first, then each guest with a session now, by invite id (the order a viewer's
    /// sections show them in when it joins).
    participants: Vec<ParticipantOut>,
}

/// One participant of a stage.
#[derive(Serialize, ToSchema)]
pub struct ParticipantOut {
    /// The guest's invite id (`null` for the host).
    #[schema(required = true)]
    id: Option<String>,
    /// `host` or `guest`.
    role: &'static str,
    /// The host's user name, or the guest's name from its invite.
    name: String,
    /// It publishes now.
    live: bool,
    /// It watches the others now.
    watching: bool,
    /// It speaks now (heard in the stage's mix; `false` while no guest is on the stage).
    speaking: bool,
    /// One-section viewers see it now (the active speaker, or the owner's pick).
    featured: bool,
    /// Featured by the owner (`PUT .../stage/featured`), not by the active speaker.
    pinned: bool,
    /// Muted by the owner: out of the mix and out of forwarding.
    muted: bool,
    /// The section pair a viewer joining now shows it on: 0 for the featured participant,
    /// then the others that publish in this list's order (a viewer keeps its slots while it
    /// watches; a newly featured participant swaps with slot 0); `null` while it does not
    /// publish.
    #[schema(required = true)]
    slot: Option<usize>,
}

/// `{name}/stage/invites/{id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct InvitePath {
    /// Channel name
    pub name: String,
    /// Invite id
    pub id: String,
}

/// The guest's name and the invite's lifetime from a request, checked.
fn checked(body: &NewInvite) -> Result<(String, i64), ApiError> {
    let name = body.name.as_deref().unwrap_or(DEFAULT_NAME).trim();
    let ttl = body.ttl_s.unwrap_or(DEFAULT_TTL_S);
    check_invite(name, ttl).map_err(ApiError::BadRequest)?;
    Ok((name.to_string(), ttl))
}

/// The co-stream page URL for an invite.
pub fn join_url(public_url: &str, channel: &str, token: &str) -> String {
    format!(
        "{}/stage/{channel}?invite={token}",
        public_url.trim_end_matches('/')
    )
}

/// `POST /api/channels/{name}/stage/invites` (owner): invite a guest onto the stage.
#[utoipa::path(
    post,
    path = "/api/channels/{name}/stage/invites",
    tag = "stage",
    operation_id = "create_stage_invite",
    params(ChannelPath),
    request_body = NewInvite,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; the token is shown once", body = NewInviteOut),
        (status = 400, description = "Malformed JSON, an unknown field, a bad name or ttl_s",
            body = ErrorBody),
        Unauthorized,
        NotOwner,
        NoSuchChannel,
        BodyRejected,
    )
)]
pub async fn create_invite(
    AxState(st): AxState<State>,
    Path(channel): Path<String>,
    user: User,
    JsonBody(body): JsonBody<NewInvite>,
) -> Result<Response, ApiError> {
    owned(&st, &channel, &user).await?;
    let (name, ttl) = checked(&body)?;
    let new = st
        .store
        .create_invite(&channel, &name, ttl)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(format!("no such channel: {channel}")))?;
    let token = new.token.expose().to_string();
    let body = NewInviteOut {
        join_url: join_url(&st.settings.public_url, &channel, &token),
        id: new.invite.id,
        token,
        expires_at: new.invite.expires_at,
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// `GET /api/channels/{name}/stage/invites` (owner).
#[utoipa::path(
    get,
    path = "/api/channels/{name}/stage/invites",
    tag = "stage",
    operation_id = "list_stage_invites",
    params(ChannelPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The channel's invites", body = InvitesOut),
        Unauthorized,
        NotOwner,
        NoSuchChannel,
    )
)]
pub async fn list_invites(
    AxState(st): AxState<State>,
    Path(channel): Path<String>,
    user: User,
) -> Result<Response, ApiError> {
    owned(&st, &channel, &user).await?;
    let items = st
        .store
        .invites(&channel)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .into_iter()
        .map(InviteOut::from)
        .collect();
    Ok(axum::Json(InvitesOut { items }).into_response())
}

/// `DELETE /api/channels/{name}/stage/invites/{id}` (owner): the token admits no one from now,
/// and its guest, if on the stage, is ended at once (its publish and its watching).
#[utoipa::path(
    delete,
    path = "/api/channels/{name}/stage/invites/{id}",
    tag = "stage",
    operation_id = "revoke_stage_invite",
    params(InvitePath),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked; its guest is off the stage"),
        Unauthorized,
        NotOwner,
        (status = 404, description = "No such channel, or no such invite of it", body = ErrorBody),
    )
)]
pub async fn revoke_invite(
    AxState(st): AxState<State>,
    Path((channel, id)): Path<(String, String)>,
    user: User,
) -> Result<Response, ApiError> {
    owned(&st, &channel, &user).await?;
    let found = st
        .store
        .revoke_invite(&channel, &id)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if !found {
        return Err(ApiError::NotFound(format!("no such invite: {id}")));
    }
    // A removed guest leaves the stage now, not at the next invite check.
    st.live.end_guest(&channel, &id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/channels/{name}/stage` (owner): who is on the stage now.
#[utoipa::path(
    get,
    path = "/api/channels/{name}/stage",
    tag = "stage",
    operation_id = "get_stage",
    params(ChannelPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The host and the guests with a session", body = StageOut),
        Unauthorized,
        NotOwner,
        NoSuchChannel,
    )
)]
pub async fn get_stage(
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
    let mut participants = Vec::new();
    let present = st.live.stage(&channel).await;
    let host = present.iter().find(|p| p.invite.is_none());
    let host = host.cloned().unwrap_or_default();
    participants.push(ParticipantOut {
        id: None,
        role: "host",
        name: user.name.clone(),
        live: host.live,
        watching: host.watching,
        speaking: host.speaking,
        featured: host.featured,
        pinned: host.pinned,
        muted: host.muted,
        slot: host.slot,
    });
    for p in &present {
        let Some(id) = &p.invite else { continue };
        // A guest whose invite is gone (its channel re-created) is not this stage's.
        let Some(invite) = invites.iter().find(|i| &i.id == id) else {
            continue;
        };
        participants.push(ParticipantOut {
            id: Some(id.clone()),
            role: "guest",
            name: invite.name.clone(),
            live: p.live,
            watching: p.watching,
            speaking: p.speaking,
            featured: p.featured,
            pinned: p.pinned,
            muted: p.muted,
            slot: p.slot,
        });
    }
    Ok(axum::Json(StageOut {
        max_guests: storage::MAX_GUESTS,
        participants,
    })
    .into_response())
}

/// A stage guest went live on `channel`: announce `stage.joined` with its invite id and name.
pub async fn guest_joined(
    store: &storage::Store,
    channel: &str,
    guest: &str,
    public_url: &str,
) -> Result<(), sqlx::Error> {
    guest_event(store, channel, guest, "stage.joined", public_url).await
}

/// A stage guest left `channel`'s stage (it ended, lost its connection or was removed):
/// announce `stage.left`.
pub async fn guest_left(
    store: &storage::Store,
    channel: &str,
    guest: &str,
    public_url: &str,
) -> Result<(), sqlx::Error> {
    guest_event(store, channel, guest, "stage.left", public_url).await
}

async fn guest_event(
    store: &storage::Store,
    channel: &str,
    guest: &str,
    event: &str,
    public_url: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = store.pool().begin().await?;
    let name: Option<(String,)> =
        sqlx::query_as("SELECT name FROM stage_invites WHERE channel = $1 AND id = $2")
            .bind(channel)
            .bind(guest)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((name,)) = name else {
        return Ok(()); // the channel (and its invites) was deleted meanwhile
    };
    let data = serde_json::json!({"guest": guest, "name": name});
    crate::webhooks::enqueue(&mut tx, channel, event, data, public_url).await?;
    tx.commit().await
}
