//! WHIP/WHEP session resources by their unguessable token, and the admission counts kept with
//! them: sessions per client address and WHEP sessions not yet connected. A request reserves
//! its place with a [`Ticket`] before the (asynchronous) SFU call, so a burst of concurrent
//! offers cannot all pass the check before any of them is counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use sfu::PeerId;

use crate::limits::Limits;

/// Whether a session publishes (WHIP) or views (WHEP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Whip,
    Whep,
}

#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub peer: PeerId,
    pub channel: String,
    pub kind: Kind,
    pub etag: String,
    /// The client's current ICE ufrag (from its offer; replaced by ICE restarts).
    pub client_ufrag: Option<String>,
    /// A viewer's address and user agent (`ip\nagent`), for counting unique viewers.
    pub client: Option<String>,
    /// The address key per-address limits count this session under (none: exempt).
    pub counted_as: Option<IpAddr>,
    /// ICE + DTLS completed.
    pub connected: bool,
    /// Candidates trickled so far.
    pub candidates: usize,
    /// A viewer that presented a valid playback token (it stays when the channel turns
    /// private).
    pub tokened: bool,
    /// A publisher's account (the channel's owner), for the per-account cap.
    pub account: Option<String>,
    /// A publisher's stream key fingerprint ([`storage::key_fingerprint`]): the session ends
    /// when the channel's key no longer has it.
    pub key: Option<String>,
    /// A stage guest's invite and display name (its stream is the channel's guest stream).
    pub guest: Option<Guest>,
    /// A WHEP session with more than one section pair: a stage participant arriving later
    /// can be shown on it.
    pub stage: bool,
}

/// One participant of a stage with a session on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The guest's invite id; `None` for the host.
    pub invite: Option<String>,
    /// It has a WHIP session (publishes).
    pub publishing: bool,
    /// It has a WHEP session watching the others.
    pub watching: bool,
}

/// Who a stage guest's session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Guest {
    /// The invite id it joined with.
    pub invite: String,
    /// Its display name.
    pub name: String,
}

/// Why a new session was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The client address holds `sessions_per_ip` sessions.
    PerAddress,
    /// `pending_sessions` WHEP sessions are still connecting.
    Pending,
}

#[derive(Default)]
struct Inner {
    by_token: HashMap<String, Session>,
    /// Places taken by requests between admission and insertion.
    reserved: HashMap<IpAddr, usize>,
    reserved_pending: usize,
    /// Stage seats held by guests whose join is under way, by channel (invite ids).
    seats: HashMap<String, Vec<String>>,
}

/// Session resources and their admission counts.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

/// A place reserved for a session being created; given back on drop (the request failed) or
/// turned into the session by [`Sessions::insert`].
pub(crate) struct Ticket {
    sessions: Arc<Sessions>,
    counted_as: Option<IpAddr>,
    pending: bool,
}

impl Ticket {
    pub fn counted_as(&self) -> Option<IpAddr> {
        self.counted_as
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.sessions.lock();
        if let Some(key) = self.counted_as {
            if let Some(n) = inner.reserved.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    inner.reserved.remove(&key);
                }
            }
        }
        if self.pending {
            inner.reserved_pending = inner.reserved_pending.saturating_sub(1);
        }
    }
}

/// A seat on a stage held for a guest whose join is under way (between the capacity check and
/// its session's insertion), so two guests joining at once cannot both take the last seat;
/// given back on drop.
pub(crate) struct Seat {
    sessions: Arc<Sessions>,
    channel: String,
    invite: String,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut inner = self.sessions.lock();
        if let Some(held) = inner.seats.get_mut(&self.channel) {
            if let Some(i) = held.iter().position(|g| *g == self.invite) {
                held.remove(i);
            }
            if held.is_empty() {
                inner.seats.remove(&self.channel);
            }
        }
    }
}

impl Sessions {
    /// Take a seat on `channel`'s stage for the guest `invite`, unless the stage holds `max`
    /// guests already (those with a session and those joining). A guest already on the stage
    /// (a reconnect replacing its own session) always gets one.
    pub(crate) fn take_seat(
        self: &Arc<Self>,
        channel: &str,
        invite: &str,
        max: usize,
    ) -> Option<Seat> {
        let mut inner = self.lock();
        let mut on: Vec<&str> = inner
            .by_token
            .values()
            .filter(|s| s.channel == channel && s.kind == Kind::Whip)
            .filter_map(|s| s.guest.as_ref().map(|g| g.invite.as_str()))
            .chain(
                inner
                    .seats
                    .get(channel)
                    .into_iter()
                    .flatten()
                    .map(String::as_str),
            )
            .collect();
        on.sort_unstable();
        on.dedup();
        if !on.contains(&invite) && on.len() >= max {
            return None;
        }
        inner
            .seats
            .entry(channel.to_string())
            .or_default()
            .push(invite.to_string());
        Some(Seat {
            sessions: self.clone(),
            channel: channel.to_string(),
            invite: invite.to_string(),
        })
    }

    /// Reserve a place for a new session from `key` (`None`: exempt from per-address
    /// limits); `pending` counts it against the node-wide connecting cap too (WHEP).
    pub(crate) fn admit(
        self: &Arc<Self>,
        key: Option<IpAddr>,
        pending: bool,
        limits: &Limits,
    ) -> Result<Ticket, Refusal> {
        let mut inner = self.lock();
        if let Some(key) = key {
            let live = inner
                .by_token
                .values()
                .filter(|s| s.counted_as == Some(key))
                .count();
            let reserved = inner.reserved.get(&key).copied().unwrap_or(0);
            if live + reserved >= limits.sessions_per_ip {
                return Err(Refusal::PerAddress);
            }
        }
        if pending {
            let connecting = inner
                .by_token
                .values()
                .filter(|s| s.kind == Kind::Whep && !s.connected)
                .count();
            if connecting + inner.reserved_pending >= limits.pending_sessions {
                return Err(Refusal::Pending);
            }
            inner.reserved_pending += 1;
        }
        if let Some(key) = key {
            *inner.reserved.entry(key).or_default() += 1;
        }
        Ok(Ticket {
            sessions: self.clone(),
            counted_as: key,
            pending,
        })
    }

    /// Store a new session in the place `ticket` reserved.
    pub(crate) fn insert(&self, token: String, session: Session, ticket: Ticket) {
        // Insert first, then give the reservation back (the ticket's drop), so the count
        // never dips in between.
        self.lock().by_token.insert(token, session);
        drop(ticket);
    }

    /// Replace a session's state (ICE restart, trickle counts).
    pub(crate) fn update(&self, token: &str, f: impl FnOnce(&mut Session)) {
        if let Some(s) = self.lock().by_token.get_mut(token) {
            f(s);
        }
    }

    pub(crate) fn get(&self, token: &str) -> Option<Session> {
        self.lock().by_token.get(token).cloned()
    }

    pub(crate) fn remove(&self, token: &str) -> Option<Session> {
        self.lock().by_token.remove(token)
    }

    /// Forget the resource of a peer the SFU closed on its own (replaced, disconnected).
    pub fn forget_peer(&self, peer: PeerId) {
        self.lock().by_token.retain(|_, s| s.peer != peer);
    }

    /// A peer completed ICE + DTLS: it no longer counts as connecting.
    pub fn connected(&self, peer: PeerId) {
        for s in self.lock().by_token.values_mut() {
            if s.peer == peer {
                s.connected = true;
            }
        }
    }

    /// The channel a WHEP viewer `peer` watches, with its client (`address\nuser agent`).
    /// Stage participants watching each other (a guest's invite, the host's key) are not
    /// audience: none.
    pub fn viewer(&self, peer: PeerId) -> Option<(String, String)> {
        self.lock()
            .by_token
            .values()
            .find(|s| {
                s.peer == peer && s.kind == Kind::Whep && s.guest.is_none() && s.key.is_none()
            })
            .map(|s| (s.channel.clone(), s.client.clone().unwrap_or_default()))
    }

    /// The WHEP sessions of `channel`'s audience with one section pair: a stage shows them the
    /// featured participant and the mix.
    pub fn single_viewers(&self, channel: &str) -> Vec<PeerId> {
        self.audience_of(channel, false)
    }

    /// The WHEP sessions of `channel`'s audience (not a participant) with (`stage`) or
    /// without more than one section pair.
    fn audience_of(&self, channel: &str, stage: bool) -> Vec<PeerId> {
        self.lock()
            .by_token
            .values()
            .filter(|s| {
                s.kind == Kind::Whep
                    && s.channel == channel
                    && s.stage == stage
                    && s.guest.is_none()
                    && s.key.is_none()
            })
            .map(|s| s.peer)
            .collect()
    }

    /// Forget the WHEP sessions of `channel` that hold no playback token; their peers.
    pub fn take_tokenless_viewers(&self, channel: &str) -> Vec<PeerId> {
        let mut taken = Vec::new();
        self.lock().by_token.retain(|_, s| {
            let goes = s.kind == Kind::Whep && s.channel == channel && !s.tokened;
            if goes {
                taken.push(s.peer);
            }
            !goes
        });
        taken
    }

    /// Channels other than `except` that `account` publishes now.
    pub(crate) fn published_by(&self, account: &str, except: &str) -> usize {
        self.lock()
            .by_token
            .values()
            .filter(|s| {
                s.kind == Kind::Whip && s.account.as_deref() == Some(account) && s.channel != except
            })
            .count()
    }

    /// Every session opened with a stream key (the host's publish, and its WHEP session
    /// watching its stage) with its token, channel, peer and key fingerprint.
    pub(crate) fn publishers(&self) -> Vec<(String, String, PeerId, String)> {
        self.lock()
            .by_token
            .iter()
            .filter(|(_, s)| s.kind == Kind::Whip)
            .filter_map(|(t, s)| {
                let key = s.key.clone()?;
                Some((t.clone(), s.channel.clone(), s.peer, key))
            })
            .collect()
    }

    /// The publisher session of `channel` (its host, never a stage guest), if any.
    pub fn publisher_of(&self, channel: &str) -> Option<PeerId> {
        self.lock()
            .by_token
            .values()
            .find(|s| s.kind == Kind::Whip && s.channel == channel && s.guest.is_none())
            .map(|s| s.peer)
    }

    /// The invite ids of `channel`'s stage guests with a session now.
    pub fn guests_of(&self, channel: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .lock()
            .by_token
            .values()
            .filter(|s| s.channel == channel && s.kind == Kind::Whip)
            .filter_map(|s| s.guest.as_ref().map(|g| g.invite.clone()))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// `channel`'s stage guests publishing now: invite id and name, by invite id.
    pub fn guest_names(&self, channel: &str) -> Vec<(String, String)> {
        let mut guests: Vec<(String, String)> = self
            .lock()
            .by_token
            .values()
            .filter(|s| s.channel == channel && s.kind == Kind::Whip)
            .filter_map(|s| s.guest.as_ref().map(|g| (g.invite.clone(), g.name.clone())))
            .collect();
        guests.sort();
        guests.dedup_by(|a, b| a.0 == b.0);
        guests
    }

    /// Who is on `channel`'s stage with a session here: the host first (its invite `None`),
    /// then each guest by invite id, with whether it publishes and whether it watches.
    pub fn presence(&self, channel: &str) -> Vec<Presence> {
        let inner = self.lock();
        let mut host = Presence {
            invite: None,
            publishing: false,
            watching: false,
        };
        let mut guests: std::collections::BTreeMap<String, Presence> = Default::default();
        for s in inner.by_token.values().filter(|s| s.channel == channel) {
            let entry = match &s.guest {
                Some(g) => guests.entry(g.invite.clone()).or_insert_with(|| Presence {
                    invite: Some(g.invite.clone()),
                    publishing: false,
                    watching: false,
                }),
                // A keyless WHEP session is audience, not the host.
                None if s.kind == Kind::Whep && s.key.is_none() => continue,
                None => &mut host,
            };
            match s.kind {
                Kind::Whip => entry.publishing = true,
                Kind::Whep => entry.watching = true,
            }
        }
        std::iter::once(host).chain(guests.into_values()).collect()
    }

    /// Forget every session of the stage guest `invite` of `channel` (its publish and its
    /// watching); their peers, to close.
    pub fn take_guest(&self, channel: &str, invite: &str) -> Vec<PeerId> {
        let mut taken = Vec::new();
        self.lock().by_token.retain(|_, s| {
            let goes = s.channel == channel && s.guest.as_ref().is_some_and(|g| g.invite == invite);
            if goes {
                taken.push(s.peer);
            }
            !goes
        });
        taken
    }

    /// The audience of `channel` watching with more than one section pair (not a
    /// participant): their first section pair shows the featured participant.
    pub fn stage_viewers(&self, channel: &str) -> Vec<PeerId> {
        self.audience_of(channel, true)
    }

    /// The stage's participants watching `channel`: guests with their invite, the host with
    /// its key (their sessions show the channel's streams, but they are not its audience).
    pub fn participants_watching(&self, channel: &str) -> u64 {
        self.lock()
            .by_token
            .values()
            .filter(|s| {
                s.kind == Kind::Whep
                    && s.channel == channel
                    && (s.guest.is_some() || s.key.is_some())
            })
            .count() as u64
    }

    /// The WHEP sessions of `channel` with more than one section pair: peer, the invite of a
    /// guest watching, whether it is
    /// the host watching (with its key).
    pub(crate) fn watchers_of(&self, channel: &str) -> Vec<(PeerId, Option<String>, bool)> {
        self.lock()
            .by_token
            .values()
            .filter(|s| s.kind == Kind::Whep && s.channel == channel && s.stage)
            .map(|s| {
                let invite = s.guest.as_ref().map(|g| g.invite.clone());
                (s.peer, invite, s.key.is_some())
            })
            .collect()
    }

    /// Every stage guest's session: token, channel, peer, guest.
    pub(crate) fn guest_sessions(&self) -> Vec<(String, String, PeerId, Guest)> {
        self.lock()
            .by_token
            .iter()
            .filter_map(|(t, s)| {
                let g = s.guest.clone()?;
                Some((t.clone(), s.channel.clone(), s.peer, g))
            })
            .collect()
    }

    /// The stage guest publishing as `peer`: its channel and guest.
    pub fn guest_of_peer(&self, peer: PeerId) -> Option<(String, String, String)> {
        self.lock()
            .by_token
            .values()
            .find(|s| s.peer == peer)
            .and_then(|s| {
                let g = s.guest.as_ref()?;
                Some((s.channel.clone(), g.invite.clone(), g.name.clone()))
            })
    }

    /// Number of session resources.
    pub fn len(&self) -> usize {
        self.lock().by_token.len()
    }

    /// No session resources.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(peer: u64, counted_as: Option<IpAddr>) -> Session {
        Session {
            peer: PeerId(peer),
            channel: "demo".into(),
            kind: Kind::Whep,
            etag: String::new(),
            client_ufrag: None,
            client: None,
            counted_as,
            connected: false,
            candidates: 0,
            tokened: false,
            account: None,
            key: None,
            guest: None,
            stage: false,
        }
    }

    #[test]
    fn guests_joining_at_once_cannot_both_take_the_last_seat_on_a_stage() {
        let sessions = Arc::new(Sessions::default());
        let guest = |peer: u64, invite: &str| Session {
            kind: Kind::Whip,
            guest: Some(Guest {
                invite: invite.into(),
                name: invite.into(),
            }),
            ..session(peer, None)
        };
        let on = sessions.admit(None, false, &Limits::default()).unwrap();
        sessions.insert("g1".into(), guest(1, "i1"), on);
        // Two more joins under way: with a cap of 3, the one after them is refused.
        let s2 = sessions.take_seat("demo", "i2", 3).unwrap();
        let s3 = sessions.take_seat("demo", "i3", 3).unwrap();
        assert!(
            sessions.take_seat("demo", "i4", 3).is_none(),
            "the stage is full"
        );
        assert!(
            sessions.take_seat("demo", "i1", 3).is_some(),
            "a guest on the stage reconnecting keeps its seat"
        );
        assert!(
            sessions.take_seat("other", "i4", 3).is_some(),
            "another stage"
        );
        // One join fails (its seat drops): room again.
        drop(s3);
        let s4 = sessions.take_seat("demo", "i4", 3).unwrap();
        drop((s2, s4));
        assert!(sessions.lock().seats.is_empty(), "every seat given back");
    }

    #[test]
    fn reservations_count_until_the_session_exists_and_are_returned_on_failure() {
        let sessions = Arc::new(Sessions::default());
        let limits = Limits {
            sessions_per_ip: 2,
            pending_sessions: 10,
            ..Limits::default()
        };
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let t1 = sessions.admit(Some(a), true, &limits).unwrap();
        let t2 = sessions.admit(Some(a), true, &limits).unwrap();
        // Two in flight: a third from the same address is refused, another address is not.
        assert_eq!(
            sessions.admit(Some(a), true, &limits).err(),
            Some(Refusal::PerAddress)
        );
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        drop(sessions.admit(Some(b), true, &limits).unwrap());
        // One request fails (its ticket drops): room again. The other becomes a session.
        drop(t1);
        sessions.insert("x".into(), session(1, Some(a)), t2);
        let t3 = sessions.admit(Some(a), true, &limits).unwrap();
        assert_eq!(
            sessions.admit(Some(a), true, &limits).err(),
            Some(Refusal::PerAddress)
        );
        drop(t3);
        sessions.remove("x");
        assert!(sessions.admit(Some(a), true, &limits).is_ok());
    }

    #[test]
    fn connecting_sessions_are_capped_node_wide_and_connected_ones_are_not() {
        let sessions = Arc::new(Sessions::default());
        let limits = Limits {
            pending_sessions: 2,
            ..Limits::default()
        };
        for peer in 1..=2 {
            let t = sessions.admit(None, true, &limits).unwrap();
            sessions.insert(format!("t{peer}"), session(peer, None), t);
        }
        assert_eq!(
            sessions.admit(None, true, &limits).err(),
            Some(Refusal::Pending)
        );
        // A publisher (not pending-capped) still gets in.
        assert!(sessions.admit(None, false, &limits).is_ok());
        sessions.connected(PeerId(1));
        assert!(sessions.admit(None, true, &limits).is_ok());
    }
}
