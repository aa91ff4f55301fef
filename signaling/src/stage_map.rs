//! Which section of a viewing session shows whom: the stage map a player lays its tiles out
//! by, as a snapshot (`GET /whep/{channel}/{session}/stage`) and as server-sent events
//! (`GET /whep/{channel}/{session}/stage/events`: an `event: stage` whenever the map changes,
//! the first at once; it ends with the session). The session's resource URL (the WHEP
//! `Location`) is its credential, as for PATCH and DELETE.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sfu::{PeerId, Shown, StreamId};

use crate::control::SfuControl;
use crate::error::{from_sfu, ApiError};
use crate::http::AppState;
use crate::resource::session_for;
use crate::sessions::Kind;
use crate::stage_board::StageNow;

/// How often the events ask the engine what the session shows.
const EVERY: Duration = Duration::from_secs(1);

/// The stage map of one viewing session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageMap {
    /// The session's section pairs that show someone, in offer order.
    pub sections: Vec<Section>,
}

/// One section pair and who it shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Section {
    /// The mid of the video section (as in the offer).
    pub video_mid: Option<String>,
    /// The mid of the audio section.
    pub audio_mid: Option<String>,
    /// `host`, `guest`, or `mix` (a one-section viewer's audio on a live stage: the
    /// server-side mix of every participant).
    pub role: &'static str,
    /// The guest's invite id (`None` for the host).
    pub id: Option<String>,
    /// The guest's name from its invite; the channel's name for the host.
    pub name: String,
    /// The participant speaks now (from the stage's mix; `false` where no stage runs).
    pub speaking: bool,
    /// The participant is the featured one (one-section viewers see it).
    pub featured: bool,
}

/// `GET /whep/{channel}/{session}/stage`: the session's stage map now.
pub(crate) async fn snapshot<C: SfuControl>(
    State(st): State<AppState<C>>,
    Path((channel, token)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let session = session_for(&st.sessions, Kind::Whep, &channel, &token)?;
    let shown = st.sfu.shown(session.peer).await.map_err(from_sfu)?;
    Ok(axum::Json(map_of(&st, &channel, shown).await?).into_response())
}

/// `GET /whep/{channel}/{session}/stage/events`: the stage map as server-sent events.
pub(crate) async fn events<C: SfuControl>(
    State(st): State<AppState<C>>,
    Path((channel, token)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let session = session_for(&st.sessions, Kind::Whep, &channel, &token)?;
    let watch = Watch {
        st,
        channel,
        token,
        peer: session.peer,
        last: None,
        first: true,
    };
    let stream = futures_util::stream::unfold(watch, |mut w| async move {
        let map = w.next_change().await?;
        let data = serde_json::to_string(&map).unwrap_or_default();
        let event: Result<Event, Infallible> = Ok(Event::default().event("stage").data(data));
        Some((event, w))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// One event stream's state.
struct Watch<C> {
    st: AppState<C>,
    channel: String,
    /// The session's resource token.
    token: String,
    peer: PeerId,
    /// What was last sent: the streams on their sections, and the stage's state then.
    last: Option<(Vec<Shown>, Option<StageNow>)>,
    first: bool,
}

impl<C: SfuControl> Watch<C> {
    /// The next map that differs from the last one sent; `None` once the session is gone.
    async fn next_change(&mut self) -> Option<StageMap> {
        loop {
            if !std::mem::take(&mut self.first) {
                tokio::time::sleep(EVERY).await;
            }
            // The session ended (closed, or its resource deleted): the stream ends too.
            self.st.sessions.get(&self.token)?;
            let shown = self.st.sfu.shown(self.peer).await.ok()?;
            let now = stage_now(&self.st, &self.channel);
            let seen = (shown, now);
            if self.last.as_ref() == Some(&seen) {
                continue;
            }
            let map = map_of(&self.st, &self.channel, seen.0.clone()).await.ok()?;
            self.last = Some(seen);
            return Some(map);
        }
    }
}

/// `channel`'s stage now: at an edge as its upstream tells it, else as the stage's driver
/// here says.
fn stage_now<C>(st: &AppState<C>, channel: &str) -> Option<StageNow> {
    match &st.upstream {
        Some(source) => source.stage(channel).map(|s| s.now),
        None => st.stages.get(channel),
    }
}

/// Who each shown stream is: the channel's host, or a guest named by its invite (at an edge:
/// by what the upstream told).
async fn map_of<C>(
    st: &AppState<C>,
    channel: &str,
    shown: Vec<Shown>,
) -> Result<StageMap, ApiError> {
    let guests = shown.iter().any(|s| s.stream.guest_of().is_some());
    let names: Vec<(String, String)> = match &st.upstream {
        _ if !guests => Vec::new(),
        Some(source) => source
            .stage(channel)
            .map(|stage| {
                stage
                    .participants
                    .iter()
                    .filter_map(|(s, name)| Some((s.guest_of()?.1.to_string(), name.clone())))
                    .collect()
            })
            .unwrap_or_default(),
        None => st
            .store
            .invites(channel)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .into_iter()
            .map(|i| (i.id, i.name))
            .collect(),
    };
    let now = stage_now(st, channel).unwrap_or_default();
    let sections = shown
        .into_iter()
        .map(|s| {
            let (role, id, name) = who(&s.stream, channel, &names);
            Section {
                speaking: now.speaking.contains(&s.stream),
                featured: now.featured.as_ref() == Some(&s.stream),
                video_mid: s.video,
                audio_mid: s.audio,
                role,
                id,
                name,
            }
        })
        .collect();
    Ok(StageMap { sections })
}

/// The role, guest id and name of `stream`; `names` are the guests' (invite id, name).
fn who(
    stream: &StreamId,
    channel: &str,
    names: &[(String, String)],
) -> (&'static str, Option<String>, String) {
    if stream.mix_of().is_some() {
        return ("mix", None, format!("{channel} (everyone)"));
    }
    match stream.guest_of() {
        Some((_, id)) => {
            let name = names
                .iter()
                .find(|(i, _)| i == id)
                .map_or_else(|| "guest".to_string(), |(_, n)| n.clone());
            ("guest", Some(id.to_string()), name)
        }
        None => ("host", None, channel.to_string()),
    }
}
