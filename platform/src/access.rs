//! Who may see and do what in a channel: its owner, its moderators, holders of a playback
//! token (private channels), everyone else. A private channel's chat, live state and viewer
//! count are shown only to the first three.

use serde::Deserialize;
use utoipa::IntoParams;

use crate::accounts::{bearer_of, user_for_token, User};
use crate::{db, State};
use http_common::ApiError;

/// A user's standing in a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Owner,
    Moderator,
    Viewer,
}

/// `user_id`'s role in `channel`; `None` when the channel does not exist.
pub(crate) async fn role(
    st: &State,
    channel: &str,
    user_id: &str,
) -> Result<Option<Role>, ApiError> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT owner_id FROM channels WHERE name = $1")
            .bind(channel)
            .fetch_optional(st.store.pool())
            .await
            .map_err(db)?;
    let Some((owner,)) = row else {
        return Ok(None);
    };
    if owner.as_deref() == Some(user_id) {
        return Ok(Some(Role::Owner));
    }
    let m: Option<(String,)> = sqlx::query_as(
        "SELECT user_id FROM channel_moderators WHERE channel = $1 AND user_id = $2",
    )
    .bind(channel)
    .bind(user_id)
    .fetch_optional(st.store.pool())
    .await
    .map_err(db)?;
    Ok(Some(if m.is_some() {
        Role::Moderator
    } else {
        Role::Viewer
    }))
}

/// Whether `actor` may ban or time out `target`: the owner anyone but themselves, a moderator
/// only viewers (never the owner or another moderator).
pub(crate) fn may_ban(actor: Role, target: Role) -> bool {
    match actor {
        Role::Owner => target != Role::Owner,
        Role::Moderator => target == Role::Viewer,
        Role::Viewer => false,
    }
}

/// `?playback=`: a playback token of a private channel (`aethex channel token`).
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct PlaybackQuery {
    /// Playback token for a private channel; its owner and moderators need none.
    pub playback: Option<String>,
}

/// Whether a private `channel` is visible to this request: a valid playback token, or a
/// signed-in owner or moderator (session from `session_token`, else `Authorization`).
pub(crate) async fn may_see_private(
    st: &State,
    channel: &str,
    headers: &axum::http::HeaderMap,
    session_token: Option<&str>,
    playback: Option<&str>,
) -> Result<bool, ApiError> {
    if playback.is_some_and(|t| st.live.token_allows(channel, t)) {
        return Ok(true);
    }
    let Some(token) = session_token.or(bearer_of(headers)) else {
        return Ok(false);
    };
    let user: User = match user_for_token(st, token).await {
        Ok(u) => u,
        Err(ApiError::Unauthorized(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(matches!(
        role(st, channel, &user.id).await?,
        Some(Role::Owner | Role::Moderator)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moderators_cannot_ban_the_owner_or_each_other_and_nobody_bans_the_owner() {
        use Role::*;
        assert!(may_ban(Owner, Moderator));
        assert!(may_ban(Owner, Viewer));
        assert!(!may_ban(Owner, Owner));
        assert!(may_ban(Moderator, Viewer));
        assert!(!may_ban(Moderator, Owner));
        assert!(!may_ban(Moderator, Moderator));
        assert!(!may_ban(Viewer, Viewer));
    }
}
