//! A live stage's media work at the origin (docs/costreaming.md, "One-section viewers"): the
//! thin tokio driver of the sans-IO `stage` crate. While a channel has a guest on its stage,
//! one task per channel
//! - hears every participant (the host and each guest) through a local relay sink on its
//!   stream: the SFU hands it their packets as it hands them to an edge;
//! - mixes their audio with [`stage::mix::Mixer`] every 20 ms (every participant decoded once,
//!   one encoder per stage) and feeds the mix back into the SFU as the stream
//!   `{channel}~~mix` with one Opus track, as an upstream feeds an edge;
//! - finds who speaks ([`stage::speaker`]) from the RFC 6464 audio level a publisher sends
//!   with its packets (browsers, aiortc), else from the level of its decoded audio (OBS
//!   sends none);
//! - shows every one-section viewer of the channel the featured participant on its video
//!   section (switched on the new participant's cached keyframe, sequence numbers going on)
//!   and the mix on its audio section, and every viewer with several section pairs the
//!   featured participant on its first (slot 0: two sections swap);
//! - applies the host's controls from the stage board (a pinned participant instead of the
//!   active speaker; muted participants out of the mix and out of forwarding),
//! - and says who is featured and who speaks on the stage board, which the stage map serves.
//!
//! A stage with no guest left for [`LINGER`] ends: its one-section viewers get the host on
//! both sections again, the host's controls are dropped (no one stays muted) and the mix goes
//! offline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sfu::driver::SfuHandle;
use sfu::{RelayCodec, RelayId, RelayIn, RelayTracks, Sections, StreamId, AUDIO_TRACK};
use signaling::sessions::Sessions;
use signaling::stage_board::StageBoard;
use stage::mix::{Mixer, FRAME};
use stage::speaker::{ActiveSpeaker, SpeakerConfig};
use stage::ParticipantId;

/// One mixed frame.
const FRAME_EVERY: Duration = Duration::from_millis(20);
/// How often who is on the stage, who is featured and what each one-section viewer shows are
/// brought up to date.
const REVIEW_EVERY: Duration = Duration::from_millis(100);
/// A stage with no guest for this long ends.
const LINGER: Duration = Duration::from_secs(2);
/// The mix's RTP payload type (as announced to the SFU; viewers get their own).
const MIX_PT: u8 = 111;
/// Local relay sinks take ids from here up (edge connections count from 1).
const LOCAL_RELAYS: u64 = 1 << 62;

/// The stages running at this origin.
#[derive(Clone)]
pub struct Stages {
    sfu: SfuHandle,
    sessions: Arc<Sessions>,
    board: Arc<StageBoard>,
    running: Arc<Mutex<HashMap<String, u64>>>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl Stages {
    /// Stages driven on `sfu` for the sessions in `sessions`, told on `board`.
    pub fn new(sfu: SfuHandle, sessions: Arc<Sessions>, board: Arc<StageBoard>) -> Self {
        Self {
            sfu,
            sessions,
            board,
            running: Arc::default(),
            next: Arc::new(std::sync::atomic::AtomicU64::new(LOCAL_RELAYS)),
        }
    }

    /// A guest went live on `channel`: run its stage, unless it runs already.
    pub fn ensure(&self, channel: &str) {
        let Ok(channel) = StreamId::new(channel) else {
            return;
        };
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if running.contains_key(channel.as_str()) {
                return;
            }
            running.insert(channel.to_string(), id);
        }
        let this = self.clone();
        tokio::spawn(async move {
            let name = channel.to_string();
            let span = tracing::info_span!("stage", channel = %name);
            let _ = tracing::Instrument::instrument(this.run(channel, RelayId(id)), span).await;
            this.board.end(&name);
            let mut running = this.running.lock().unwrap_or_else(|e| e.into_inner());
            if running.get(&name) == Some(&id) {
                running.remove(&name);
            }
        });
    }

    async fn run(&self, channel: StreamId, relay: RelayId) -> Result<(), String> {
        let sfu = &self.sfu;
        let mut queues = sfu.relay_attach(relay).await.map_err(|e| e.to_string())?;
        let mix = StreamId::mix(&channel);
        let mut mixer = Mixer::new().map_err(|e| e.to_string())?;
        sfu.relay_tracks(RelayTracks {
            stream: mix.clone(),
            generation: relay.0,
            tracks: vec![(AUDIO_TRACK, false)],
            codecs: vec![opus()],
        })
        .await
        .map_err(|e| e.to_string())?;
        tracing::info!(mix = %mix, "stage live: mixing its participants");
        let ingest = sfu.relay_ingest();
        let mut speaker = ActiveSpeaker::new(SpeakerConfig::default());
        let mut cast = Cast::default();
        let mut out = MixRtp::new(relay.0);
        let mut frame = tokio::time::interval(FRAME_EVERY);
        let mut review = tokio::time::interval(REVIEW_EVERY);
        review.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut alone_since: Option<Instant> = None;
        let mut one_section = OneSection::default();
        let mut featured_first = FeaturedFirst::default();
        let mut muted: Vec<StreamId> = Vec::new();
        loop {
            tokio::select! {
                Some(p) = queues.packets.recv() => {
                    if p.track == AUDIO_TRACK {
                        if let (Some(id), Ok(h)) =
                            (cast.id_of(&p.stream), media_core::rtp::RtpHeader::parse(&p.data))
                        {
                            mixer.push(id, h.payload(&p.data));
                            // The level the publisher measured (browsers, aiortc) before its
                            // encoder; the decoded one is the fallback (OBS sends none).
                            if let Some(level) = p.level {
                                let now = Instant::now();
                                speaker.observe(id, level, now);
                                cast.reported(id, now);
                            }
                        }
                    }
                }
                Some(_notice) = queues.notices.recv() => {
                    // A participant's new publisher or its end: the next review sees it.
                }
                _ = frame.tick() => {
                    let now = Instant::now();
                    let mixed = match mixer.mix() {
                        Ok(m) => m,
                        Err(e) => {
                            // libopus refused (a bug): the stage ends cleanly below.
                            tracing::warn!(error = %e, "the mix failed: ending the stage");
                            break;
                        }
                    };
                    for (p, level) in mixed.levels {
                        if !cast.reports(p, now) {
                            speaker.observe(p, level, now);
                        }
                    }
                    let data = out.packet(&mixed.packet);
                    let _ = ingest.try_send(RelayIn { stream: mix.clone(), track: AUDIO_TRACK, data });
                }
                _ = review.tick() => {
                    let now = Instant::now();
                    let on_stage = self.participants(&channel);
                    let guests = on_stage.len().saturating_sub(usize::from(on_stage.contains(&channel)));
                    if guests == 0 {
                        let since = *alone_since.get_or_insert(now);
                        if now.duration_since(since) >= LINGER {
                            break;
                        }
                    } else {
                        alone_since = None;
                    }
                    cast.update(sfu, relay, &on_stage, &mut mixer, &mut speaker, now).await;
                    // The host's controls: a pin overrides the active speaker; a muted
                    // participant is out of the mix and its audio is forwarded to no one.
                    let controls = self.board.controls(channel.as_str());
                    let pin = controls.pinned.as_ref().and_then(|s| cast.id_of(s));
                    if pin != speaker.pinned() {
                        speaker.pin(pin, now);
                    }
                    if controls.muted != muted {
                        for s in muted.iter().filter(|s| !controls.muted.contains(s)) {
                            set_muted(sfu, &mut mixer, &cast, s, false).await;
                        }
                        for s in controls.muted.iter().filter(|s| !muted.contains(s)) {
                            set_muted(sfu, &mut mixer, &cast, s, true).await;
                        }
                        muted = controls.muted;
                    }
                    let featured = speaker.featured(now).and_then(|p| cast.stream_of(p).cloned());
                    let speaking: Vec<StreamId> = cast
                        .members()
                        .filter(|(_, p)| speaker.speaking(*p, now))
                        .map(|(s, _)| s.clone())
                        .collect();
                    self.board.set(channel.as_str(), featured.clone(), speaking);
                    if let Some(featured) = featured {
                        let want = Shows {
                            featured,
                            mix: sfu.is_live(mix.clone()).await.unwrap_or(false),
                        };
                        let viewers = self.sessions.single_viewers(channel.as_str());
                        one_section.review(sfu, viewers, &want, &mix, &channel).await;
                        let viewers = self.sessions.stage_viewers(channel.as_str());
                        featured_first.review(sfu, viewers, &want.featured).await;
                    }
                }
            }
        }
        tracing::info!("stage ended: one-section viewers get the host again");
        for peer in self.sessions.single_viewers(channel.as_str()) {
            restore(sfu, peer, &channel).await;
        }
        // The host's controls last as long as the stage: no one stays muted after it.
        for s in &muted {
            set_muted(sfu, &mut mixer, &cast, s, false).await;
        }
        self.board.clear_controls(channel.as_str());
        let _ = sfu.relay_offline(mix).await;
        let _ = sfu.relay_gone(relay).await;
        Ok(())
    }

    /// The streams on `channel`'s stage now: the host's if it publishes, each guest's.
    fn participants(&self, channel: &StreamId) -> Vec<StreamId> {
        let host = self
            .sessions
            .publisher_of(channel.as_str())
            .map(|_| channel.clone());
        host.into_iter()
            .chain(
                self.sessions
                    .guests_of(channel.as_str())
                    .iter()
                    .map(|g| StreamId::guest(channel, g)),
            )
            .collect()
    }
}

/// The stages at this origin as the relay tells them to edges: who is on each (from the
/// sessions: a stage is told while a guest publishes), who is featured and who speaks (from
/// the stage board its driver writes).
pub struct OriginStages {
    /// The sessions here.
    pub sessions: Arc<Sessions>,
    /// What each stage's driver says.
    pub board: Arc<StageBoard>,
}

impl edge::StageSource for OriginStages {
    fn stage(&self, channel: &str) -> Option<edge::RelayedStage> {
        let guests = self.sessions.guest_names(channel);
        if guests.is_empty() {
            return None;
        }
        let host = StreamId::new(channel).ok()?;
        let member = |stream: &StreamId, name: String| edge::proto::StageMember {
            stream: stream.to_string(),
            name,
        };
        let participants = self
            .sessions
            .publisher_of(channel)
            .map(|_| member(&host, channel.to_string()))
            .into_iter()
            .chain(
                guests
                    .into_iter()
                    .map(|(id, name)| member(&StreamId::guest(&host, &id), name)),
            )
            .collect();
        let now = self.board.get(channel).unwrap_or_default();
        Some(edge::RelayedStage {
            participants,
            featured: now.featured.map(|s| s.to_string()),
            speaking: now.speaking.iter().map(|s| s.to_string()).collect(),
        })
    }
}

/// Who the mix hears, by stream.
#[derive(Default)]
struct Cast {
    ids: HashMap<StreamId, ParticipantId>,
    /// When each participant's publisher last sent an RFC 6464 audio level.
    levels_at: HashMap<ParticipantId, Instant>,
    next: u64,
}

/// A publisher that sent an RFC 6464 level this recently is judged on its levels alone.
const REPORTS_WITHIN: Duration = Duration::from_millis(200);

impl Cast {
    /// `p`'s publisher sent an audio level at `now`.
    fn reported(&mut self, p: ParticipantId, now: Instant) {
        if self.levels_at.insert(p, now).is_none() {
            tracing::info!(
                participant = p.0,
                "speaker levels from the publisher's RFC 6464 extension"
            );
        }
    }

    /// Whether `p`'s publisher sends audio levels (one came within [`REPORTS_WITHIN`]).
    fn reports(&self, p: ParticipantId, now: Instant) -> bool {
        self.levels_at
            .get(&p)
            .is_some_and(|at| now.saturating_duration_since(*at) < REPORTS_WITHIN)
    }

    fn id_of(&self, stream: &StreamId) -> Option<ParticipantId> {
        self.ids.get(stream).copied()
    }

    fn stream_of(&self, p: ParticipantId) -> Option<&StreamId> {
        self.ids.iter().find(|(_, id)| **id == p).map(|(s, _)| s)
    }

    fn members(&self) -> impl Iterator<Item = (&StreamId, ParticipantId)> {
        self.ids.iter().map(|(s, p)| (s, *p))
    }

    /// Hear who came on the stage (once their stream is live), let go of who left.
    async fn update(
        &mut self,
        sfu: &SfuHandle,
        relay: RelayId,
        on_stage: &[StreamId],
        mixer: &mut Mixer,
        speaker: &mut ActiveSpeaker,
        now: Instant,
    ) {
        let gone: Vec<StreamId> = self
            .ids
            .keys()
            .filter(|s| !on_stage.contains(s))
            .cloned()
            .collect();
        for s in gone {
            if let Some(p) = self.ids.remove(&s) {
                self.levels_at.remove(&p);
                mixer.remove(p);
                speaker.leave(p, now);
                let _ = sfu.relay_unsubscribe(relay, s.clone()).await;
                tracing::info!(stream = %s, "left the mix");
            }
        }
        let new: Vec<&StreamId> = on_stage
            .iter()
            .filter(|s| !self.ids.contains_key(*s))
            .collect();
        for s in new {
            if sfu.relay_subscribe(relay, s.clone()).await.is_err() {
                continue; // not live yet: asked again at the next review
            }
            self.next += 1;
            let p = ParticipantId(self.next);
            if mixer.add(p).is_ok() {
                speaker.join(p, now);
                self.ids.insert(s.clone(), p);
                tracing::info!(stream = %s, "joined the mix");
            }
        }
    }
}

/// Mute or unmute the participant of `stream`: in the mix, and in forwarding (its audio
/// reaches no viewer, edge or mix: the SFU drops it as it comes in).
async fn set_muted(
    sfu: &SfuHandle,
    mixer: &mut Mixer,
    cast: &Cast,
    stream: &StreamId,
    muted: bool,
) {
    if let Some(p) = cast.id_of(stream) {
        mixer.set_muted(p, muted);
    }
    let _ = sfu.set_muted(stream.clone(), muted).await;
    tracing::info!(%stream, muted, "the host set a participant's audio");
}

/// What a one-section viewer of a stage is to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shows {
    pub featured: StreamId,
    /// The mix on its audio section (once the mix is live).
    pub mix: bool,
}

/// What each one-section viewer of one stage was last set to show.
#[derive(Default)]
pub(crate) struct OneSection {
    applied: HashMap<sfu::PeerId, Shows>,
    reviews: u64,
}

impl OneSection {
    /// Make every one of `viewers` show `want` (the mix `mix`, the host `host`): set at once
    /// when it changes, and checked against the engine once every ten reviews that it still
    /// holds (a participant who left and came back, or a grace that ended, can take it off).
    pub(crate) async fn review(
        &mut self,
        sfu: &SfuHandle,
        viewers: Vec<sfu::PeerId>,
        want: &Shows,
        mix: &StreamId,
        host: &StreamId,
    ) {
        self.reviews += 1;
        self.applied.retain(|peer, _| viewers.contains(peer));
        let check = self.reviews.is_multiple_of(10);
        for peer in viewers {
            let stale = self.applied.get(&peer) != Some(want)
                || (check && !still_shows(sfu, peer, want).await);
            if stale {
                show(sfu, peer, want, mix, host).await;
                self.applied.insert(peer, want.clone());
            }
        }
    }
}

/// Which participant each K-section viewer of one stage was last set to show first.
#[derive(Default)]
pub(crate) struct FeaturedFirst {
    applied: HashMap<sfu::PeerId, StreamId>,
    reviews: u64,
}

impl FeaturedFirst {
    /// Put `featured` on the first section pair (slot 0) of every one of `viewers`: at once
    /// when it changes, and checked against the engine once every ten reviews.
    pub(crate) async fn review(
        &mut self,
        sfu: &SfuHandle,
        viewers: Vec<sfu::PeerId>,
        featured: &StreamId,
    ) {
        self.reviews += 1;
        self.applied.retain(|peer, _| viewers.contains(peer));
        let check = self.reviews.is_multiple_of(10);
        for peer in viewers {
            if self.applied.get(&peer) == Some(featured) && !check {
                continue;
            }
            put_first(sfu, peer, featured).await;
            self.applied.insert(peer, featured.clone());
        }
    }
}

/// Make `peer`'s first section pair show `featured` (docs/costreaming.md, "Slots"): the two
/// section pairs are freed and filled again lowest first, so `featured` takes the first and
/// whoever held it takes `featured`'s old one (or a free one; none free: it is not shown
/// until one frees). Everyone else keeps their section; both changed sections start again
/// from their new participant's keyframe cache, their numbering going on.
async fn put_first(sfu: &SfuHandle, peer: sfu::PeerId, featured: &StreamId) {
    let Ok(shown) = sfu.shown(peer).await else {
        return;
    };
    let first = shown.first().map(|s| s.stream.clone());
    if first.as_ref() == Some(featured) {
        return;
    }
    let was_shown = shown.iter().any(|s| &s.stream == featured);
    if !was_shown && !matches!(sfu.is_live(featured.clone()).await, Ok(true)) {
        return;
    }
    if let Some(first) = &first {
        let _ = sfu.unbind(peer, first.clone()).await;
    }
    if was_shown {
        let _ = sfu.unbind(peer, featured.clone()).await;
    }
    let _ = sfu.bind(peer, featured.clone(), Sections::Both).await;
    if let Some(first) = first {
        let _ = sfu.bind(peer, first, Sections::Both).await;
    }
}

/// Make one-section viewer `peer` show `want`: the featured participant on its video section
/// and the mix on its audio section (or the featured participant on both until the mix is
/// live). Each change is one `rebind`, which leaves the section as it is when the session
/// cannot show the new stream (a codec it did not negotiate): then it keeps the last one, or
/// gets the host when it shows no one.
async fn show(sfu: &SfuHandle, peer: sfu::PeerId, want: &Shows, mix: &StreamId, host: &StreamId) {
    let Ok(shown) = sfu.shown(peer).await else {
        return;
    };
    let on = |audio: bool| {
        shown
            .iter()
            .find(|s| {
                if audio {
                    s.audio.is_some()
                } else {
                    s.video.is_some()
                }
            })
            .map(|s| s.stream.clone())
    };
    let (mut video, audio) = (on(false), on(true));
    if want.mix && audio.as_ref() != Some(mix) {
        // The mix takes the audio section; what held it (the host on both) lets go of both.
        let moved = sfu
            .rebind(peer, audio.clone(), mix.clone(), Sections::Audio)
            .await;
        if moved.unwrap_or(false) && audio.is_some() && audio == video {
            video = None;
        }
    }
    if video.as_ref() == Some(&want.featured) {
        return;
    }
    let sections = if want.mix {
        Sections::Video
    } else {
        Sections::Both
    };
    let switched = sfu
        .rebind(peer, video.clone(), want.featured.clone(), sections)
        .await
        .unwrap_or(false);
    if !switched && video.is_none() {
        let _ = sfu.rebind(peer, None, host.clone(), sections).await;
    }
}

/// Whether `peer` still shows `want.featured` (a participant who left and came back, or a
/// grace that ended, can take it off).
async fn still_shows(sfu: &SfuHandle, peer: sfu::PeerId, want: &Shows) -> bool {
    sfu.shown(peer)
        .await
        .is_ok_and(|shown| shown.iter().any(|s| s.stream == want.featured))
}

/// The stage ended: `peer` shows the host on both sections again.
pub(crate) async fn restore(sfu: &SfuHandle, peer: sfu::PeerId, host: &StreamId) {
    let Ok(shown) = sfu.shown(peer).await else {
        return;
    };
    if shown.len() == 1 && &shown[0].stream == host && shown[0].audio.is_some() {
        return;
    }
    for s in shown {
        let _ = sfu.unbind(peer, s.stream).await;
    }
    let _ = sfu.bind(peer, host.clone(), Sections::Both).await;
}

/// The mix's codec as announced to the SFU: Opus, 48 kHz (mono content in the usual
/// two-channel RTP signalling).
fn opus() -> RelayCodec {
    RelayCodec {
        pt: MIX_PT,
        name: "opus".into(),
        clock_rate: 48_000,
        channels: Some(2),
        fmtp: "minptime=10;useinbandfec=1".into(),
        rtx: None,
        red: None,
    }
}

/// RTP packets of the mix: one per 20 ms frame.
struct MixRtp {
    seq: u16,
    time: u32,
    ssrc: u32,
}

impl MixRtp {
    fn new(seed: u64) -> Self {
        // Distinct per stage run; the SFU renumbers for each viewer anyway.
        Self {
            seq: (seed as u16).wrapping_mul(7919),
            time: (seed as u32).wrapping_mul(104_729),
            ssrc: (seed as u32) ^ 0x5354_4147,
        }
    }

    fn packet(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut p = Vec::with_capacity(12 + payload.len());
        p.push(0x80);
        p.push(MIX_PT);
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.time.to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        self.time = self.time.wrapping_add(FRAME as u32);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_packets_count_up_by_one_and_by_a_frame_of_ticks() {
        let mut out = MixRtp::new(3);
        let a = out.packet(&[1, 2, 3]);
        let b = out.packet(&[4]);
        let (ha, hb) = (
            media_core::rtp::RtpHeader::parse(&a).unwrap(),
            media_core::rtp::RtpHeader::parse(&b).unwrap(),
        );
        assert_eq!(hb.sequence, ha.sequence.wrapping_add(1));
        assert_eq!(hb.timestamp, ha.timestamp.wrapping_add(960));
        assert_eq!((ha.payload_type, ha.ssrc), (MIX_PT, hb.ssrc));
        assert_eq!(ha.payload(&a), &[1, 2, 3]);
    }
}
