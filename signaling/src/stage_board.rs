//! What each live stage's driver (at the origin) says about it now: who is featured on the
//! video of one-section viewers, and who speaks. The driver writes; the stage map and the
//! host's stage API read. Nothing here is kept across a restart: it is the state of the
//! media, not of the platform.

use std::collections::HashMap;
use std::sync::Mutex;

use sfu::StreamId;

/// One stage now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageNow {
    /// The featured participant's stream (the host's is the channel's).
    pub featured: Option<StreamId>,
    /// The streams of the participants speaking now.
    pub speaking: Vec<StreamId>,
}

/// What a stage's host asked for; dropped when the stage ends (no one stays muted after it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Controls {
    /// The participant featured instead of the active speaker (its stream).
    pub pinned: Option<StreamId>,
    /// Participants muted in the mix and in forwarding (their streams).
    pub muted: Vec<StreamId>,
}

/// Every running stage, by channel.
#[derive(Debug, Default)]
pub struct StageBoard {
    stages: Mutex<HashMap<String, StageNow>>,
    controls: Mutex<HashMap<String, Controls>>,
}

impl StageBoard {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, StageNow>> {
        self.stages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `channel`'s stage now.
    pub fn set(&self, channel: &str, featured: Option<StreamId>, mut speaking: Vec<StreamId>) {
        speaking.sort();
        self.lock()
            .insert(channel.to_string(), StageNow { featured, speaking });
    }

    /// `channel`'s stage ended.
    pub fn end(&self, channel: &str) {
        self.lock().remove(channel);
    }

    /// `channel`'s stage now, if one runs.
    pub fn get(&self, channel: &str) -> Option<StageNow> {
        self.lock().get(channel).cloned()
    }

    fn controls_mut<T>(&self, channel: &str, f: impl FnOnce(&mut Controls) -> T) -> T {
        let mut all = self.controls.lock().unwrap_or_else(|e| e.into_inner());
        let c = all.entry(channel.to_string()).or_default();
        let out = f(c);
        if *c == Controls::default() {
            all.remove(channel);
        }
        out
    }

    /// Feature `stream` on `channel`'s stage instead of the active speaker; `None`: back to
    /// the active speaker.
    pub fn pin(&self, channel: &str, stream: Option<StreamId>) {
        self.controls_mut(channel, |c| c.pinned = stream);
    }

    /// Mute or unmute `stream` on `channel`'s stage.
    pub fn mute(&self, channel: &str, stream: &StreamId, muted: bool) {
        self.controls_mut(channel, |c| {
            c.muted.retain(|m| m != stream);
            if muted {
                c.muted.push(stream.clone());
                c.muted.sort();
            }
        });
    }

    /// What `channel`'s host asked for.
    pub fn controls(&self, channel: &str) -> Controls {
        let all = self.controls.lock().unwrap_or_else(|e| e.into_inner());
        all.get(channel).cloned().unwrap_or_default()
    }

    /// Forget `channel`'s controls (the stage was ended by its host).
    pub fn clear_controls(&self, channel: &str) {
        let mut all = self.controls.lock().unwrap_or_else(|e| e.into_inner());
        all.remove(channel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> StreamId {
        let duo = StreamId::new("duo").unwrap();
        match name.strip_prefix("duo~") {
            Some(guest) => StreamId::guest(&duo, guest),
            None => duo,
        }
    }

    #[test]
    fn a_stage_is_on_the_board_from_its_first_word_until_it_ends() {
        let board = StageBoard::default();
        assert_eq!(board.get("duo"), None);
        board.set("duo", Some(id("duo~g1")), vec![id("duo~g1"), id("duo")]);
        let now = board.get("duo").unwrap();
        assert_eq!(now.featured, Some(id("duo~g1")));
        assert_eq!(now.speaking, [id("duo"), id("duo~g1")], "sorted");
        board.end("duo");
        assert_eq!(board.get("duo"), None);
    }

    #[test]
    fn the_hosts_pin_and_mutes_hold_until_taken_back() {
        let board = StageBoard::default();
        board.pin("duo", Some(id("duo~g1")));
        board.mute("duo", &id("duo~g2"), true);
        board.mute("duo", &id("duo~g2"), true);
        board.mute("duo", &id("duo"), true);
        let c = board.controls("duo");
        assert_eq!(c.pinned, Some(id("duo~g1")));
        assert_eq!(c.muted, [id("duo"), id("duo~g2")], "once each, sorted");
        assert_eq!(board.controls("other"), Controls::default());
        board.mute("duo", &id("duo~g2"), false);
        board.pin("duo", None);
        assert_eq!(board.controls("duo").muted, [id("duo")]);
        board.clear_controls("duo");
        assert_eq!(board.controls("duo"), Controls::default());
    }
}
