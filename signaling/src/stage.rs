//! Stage guests: a WHIP publish with an invite token (`si_...`) on `/whip/{channel}` joins the
//! channel's stage. The guest publishes into its own stream ([`StreamId::guest`]), so it never
//! replaces the host (the channel's stream, published with the stream key) nor another guest;
//! the same invite publishing again replaces its own earlier session, as a reconnecting OBS
//! does. A stage holds the host and at most [`MAX_GUESTS`] guests. A guest whose invite is
//! revoked or expires is ended by [`end_uninvited`] (run with the key check).

use std::collections::BTreeMap;

use sfu::{PeerId, Sections, StreamId};

use crate::control::{Availability, SfuControl};
use crate::error::{from_sfu, ApiError};
use crate::http::{created, AppState, NewSession};
use crate::request::sdp_attr;
use crate::sessions::{Guest, Kind, Sessions, Ticket};
use storage::{unix_now, KEY_PREFIX};

/// Guests a stage holds beside its host.
pub use storage::MAX_GUESTS;

/// The prefix of invite tokens: a bearer token with it is an invite, not a stream key.
pub const INVITE_PREFIX: &str = "si_";

/// A guest's WHIP publish on `channel` with the invite `token`.
pub(crate) async fn publish_guest<C: SfuControl>(
    st: &AppState<C>,
    channel: StreamId,
    token: &str,
    offer: String,
    ticket: Ticket,
) -> Result<axum::response::Response, ApiError> {
    let invite = invite_of(st, &channel, token).await?;
    // Held until the session is stored (the end of this call), so two guests joining at once
    // cannot both take the last seat.
    let Some(_seat) = st
        .sessions
        .take_seat(channel.as_str(), &invite.id, MAX_GUESTS)
    else {
        st.metrics.refused("stage_full");
        return Err(ApiError::Conflict(format!(
            "the stage of {channel} is full: the host and {MAX_GUESTS} guests"
        )));
    };
    let stream = StreamId::guest(&channel, &invite.id);
    let ufrag = sdp_attr(&offer, "a=ice-ufrag:");
    let published = st.sfu.publish(stream, offer).await.map_err(from_sfu)?;
    if let Some(old) = published.replaced {
        st.sessions.forget_peer(old);
    }
    tracing::info!(%channel, guest = %invite.id, "stage guest joined");
    let new = NewSession {
        kind: Kind::Whip,
        channel: channel.to_string(),
        peer: published.peer,
        client_ufrag: ufrag,
        client: None,
        tokened: false,
        account: None,
        key: None,
        guest: Some(Guest {
            invite: invite.id,
            name: invite.name,
        }),
        stage: false,
    };
    created(st, new, published.answer, ticket)
}

/// Whether a bearer `token` is a stage participant's: an invite, or a stream key (the host).
pub(crate) fn is_participant_token(token: &str) -> bool {
    token.starts_with(INVITE_PREFIX) || token.starts_with(KEY_PREFIX)
}

/// The invite `token` stands for, if it admits a guest onto `channel`'s stage now.
async fn invite_of<C>(
    st: &AppState<C>,
    channel: &StreamId,
    token: &str,
) -> Result<storage::Invite, ApiError> {
    st.store
        .invite_for_token(token)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .filter(|i| i.channel == channel.as_str())
        // One answer for unknown, revoked, expired and other channels' invites: a token
        // tells nothing about what it is not.
        .ok_or(ApiError::Unauthorized(
            "invalid, expired or revoked stage invite for this channel",
        ))
}

/// End every guest whose invite no longer admits it (revoked, expired, its channel deleted);
/// the channels and guest ids ended. A store error ends nobody: the next round asks again.
pub async fn end_uninvited<C: SfuControl>(st: &AppState<C>) -> Vec<(String, String)> {
    let mut ended = Vec::new();
    let now = unix_now();
    // Each channel's invites are read once per round, however many guests it has.
    let mut by_channel: BTreeMap<String, Vec<OnStage>> = BTreeMap::new();
    for (token, channel, peer, guest) in st.sessions.guest_sessions() {
        by_channel.entry(channel).or_default().push(OnStage {
            token,
            invite: guest.invite,
            peer,
        });
    }
    for (channel, guests) in by_channel {
        let invites = match st.store.invites(&channel).await {
            Ok(invites) => invites,
            Err(e) => {
                tracing::warn!(%channel, error = %e, "could not check stage invites");
                continue;
            }
        };
        for OnStage {
            token,
            invite,
            peer,
        } in guests
        {
            let admits = invites.iter().any(|i| i.id == invite && i.admits(now));
            if admits {
                continue;
            }
            tracing::info!(%channel, guest = %invite, "stage invite revoked or expired: ending the guest");
            st.sessions.remove(&token);
            // Already gone on the media side is fine: the resource is gone too.
            let _ = st.sfu.close(peer).await;
            ended.push((channel.clone(), invite));
        }
    }
    ended
}

/// The streams of a viewer's section pairs on a stage: the featured participant first (slot
/// 0), then the others in stage order (the host, then the guests by invite id).
fn featured_first(
    host: &StreamId,
    guests: Vec<StreamId>,
    featured: Option<&StreamId>,
) -> (StreamId, Vec<StreamId>) {
    let mut all: Vec<StreamId> = std::iter::once(host.clone()).chain(guests).collect();
    if let Some(i) = featured.and_then(|f| all.iter().position(|s| s == f)) {
        let f = all.remove(i);
        all.insert(0, f);
    }
    let first = all.remove(0);
    (first, all)
}

/// One guest's session, for the invite check.
struct OnStage {
    token: String,
    invite: String,
    peer: PeerId,
}

/// `stream` went live at this origin: show it on the free sections of the stage's watching
/// sessions (a guest's stream to everyone watching the channel but that guest, the host's
/// to everyone but the host); the sessions it was shown to. Sessions of one section pair
/// (plain viewers) have no section to spare and are not asked.
pub async fn show_arrival<C: SfuControl>(
    sessions: &Sessions,
    sfu: &C,
    stream: &StreamId,
) -> Vec<PeerId> {
    let (channel, guest) = match stream.guest_of() {
        Some((channel, guest)) => (channel, Some(guest)),
        None => (stream.as_str(), None),
    };
    let mut shown = Vec::new();
    for (peer, invite, host) in sessions.watchers_of(channel) {
        let itself = match guest {
            Some(g) => invite.as_deref() == Some(g),
            None => host,
        };
        if itself {
            continue;
        }
        if let Ok(true) = sfu.bind(peer, stream.clone(), Sections::Both).await {
            shown.push(peer);
        }
    }
    shown
}

/// What a WHEP request on a channel watches: the streams in the order of the offer's section
/// pairs, and who asks when it is a participant of the stage.
pub(crate) struct Watch {
    /// The first stream the session shows; `also` follow in the next section pairs.
    pub first: StreamId,
    pub also: Vec<StreamId>,
    /// The offer's recvonly section pairs (the larger of its video and audio counts).
    pub pairs: usize,
    /// A participant (a guest with its invite, or the host with its stream key) watching the
    /// others: not audience, and let in on a private channel.
    pub participant: Option<Participant>,
    /// Negotiate every forwardable format: a one-section viewer of a stage with a guest on
    /// it, whose video section shows whoever is featured.
    pub open: bool,
}

/// Who watches the stage from on it.
pub(crate) enum Participant {
    /// A guest (its WHEP session is ended with its invite).
    Guest(Guest),
    /// The host, by the fingerprint of the stream key (its session ends when the key turns).
    Host(String),
}

/// The stage binding of a WHEP request on `channel` with the bearer `token` (if any) and the
/// offer's `sections`:
/// - an invite token: every other participant, the host first, never the guest itself;
/// - the channel's stream key: the guests (the host watching its stage);
/// - anything else (a plain viewer, maybe with a playback token): the featured participant
///   first (slot 0; the host when no stage runs), then the others, the host first, for
///   further video sections. A one-section viewer gets the host, and while a guest is on
///   the stage it negotiates every format (the stage's driver then shows it the featured
///   participant and the mix).
///
/// At an edge, the stage its upstream tells of (viewers only: participants are sent to the
/// origin before this).
pub(crate) async fn watch<C: SfuControl>(
    st: &AppState<C>,
    channel: &StreamId,
    token: Option<&str>,
    sections: &[media_core::sdp::MediaSection],
) -> Result<Watch, ApiError> {
    let receiving = |kind: media_core::sdp::Kind| {
        sections
            .iter()
            .filter(|m| m.kind == kind && !m.disabled && m.direction.offerer_receives())
            .count()
    };
    let video_sections = receiving(media_core::sdp::Kind::Video);
    let pairs = video_sections.max(receiving(media_core::sdp::Kind::Audio));
    if let Some(source) = &st.upstream {
        // An edge serves viewers only (participants were sent to the origin, which knows the
        // invites): the stage its upstream tells of, the featured participant first, then
        // the others for further video sections, each pulled through like a channel.
        let guests: Vec<StreamId> = source
            .stage(channel.as_str())
            .map(|stage| stage.guests().cloned().collect())
            .unwrap_or_default();
        let mut live = Vec::new();
        if video_sections > 1 {
            for g in guests.iter().take(MAX_GUESTS) {
                if matches!(source.ensure(g.as_str()).await, Availability::Live { .. }) {
                    live.push(g.clone());
                }
            }
        }
        let featured = source.stage(channel.as_str()).and_then(|s| s.now.featured);
        let (first, also) = featured_first(channel, live, featured.as_ref());
        return Ok(Watch {
            first,
            also,
            pairs,
            participant: None,
            open: video_sections <= 1 && !guests.is_empty(),
        });
    }
    // Read only where guests are shown (not for a plain one-section viewer).
    let guest_streams = |except: Option<&str>| -> Vec<StreamId> {
        st.sessions
            .guests_of(channel.as_str())
            .iter()
            .filter(|g| Some(g.as_str()) != except)
            .map(|g| StreamId::guest(channel, g))
            .collect()
    };
    match token {
        Some(t) if t.starts_with(INVITE_PREFIX) => {
            let invite = invite_of(st, channel, t).await?;
            Ok(Watch {
                first: channel.clone(),
                also: guest_streams(Some(&invite.id)),
                pairs,
                participant: Some(Participant::Guest(Guest {
                    invite: invite.id,
                    name: invite.name,
                })),
                open: false,
            })
        }
        Some(t) if t.starts_with(KEY_PREFIX) => {
            let owner = st
                .store
                .channel_for_key(t)
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            if owner.as_deref() != Some(channel.as_str()) {
                return Err(ApiError::Unauthorized(
                    "invalid stream key for this channel",
                ));
            }
            let mut others = guest_streams(None).into_iter();
            let Some(first) = others.next() else {
                return Err(ApiError::NotFound(format!(
                    "no guest is on the stage of {channel}: the host watches its guests"
                )));
            };
            Ok(Watch {
                first,
                also: others.collect(),
                pairs,
                participant: Some(Participant::Host(storage::key_fingerprint(t))),
                open: false,
            })
        }
        _ => {
            let ((first, also), open) = if video_sections > 1 {
                let featured = st.stages.get(channel.as_str()).and_then(|n| n.featured);
                let order = featured_first(channel, guest_streams(None), featured.as_ref());
                (order, false)
            } else {
                // A one-section viewer: the stage's driver shows it whoever is featured.
                (
                    (channel.clone(), Vec::new()),
                    !st.sessions.guests_of(channel.as_str()).is_empty(),
                )
            };
            Ok(Watch {
                first,
                pairs,
                also,
                participant: None,
                open,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_featured_participant_takes_the_first_section_and_the_rest_keep_stage_order() {
        let host = StreamId::new("duo").unwrap();
        let (g1, g2) = (StreamId::guest(&host, "g1"), StreamId::guest(&host, "g2"));
        let guests = || vec![g1.clone(), g2.clone()];
        assert_eq!(
            featured_first(&host, guests(), Some(&g2)),
            (g2.clone(), vec![host.clone(), g1.clone()])
        );
        for nobody in [None, Some(&host), Some(&StreamId::guest(&host, "gone"))] {
            assert_eq!(
                featured_first(&host, guests(), nobody),
                (host.clone(), guests()),
                "{nobody:?}: the host first"
            );
        }
    }
}
