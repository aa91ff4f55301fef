//! The demux table of the shared media port: which session a datagram belongs to.
//!
//! A datagram from a known 5-tuple goes to its session by one hash lookup. A datagram from a new
//! address is routed only if it is a STUN Binding request whose USERNAME names a session's local
//! ufrag (see [`crate::demux::stun_local_ufrag`]); the caller lets the WebRTC engine verify its
//! MESSAGE-INTEGRITY and then calls [`Routes::learn`], so later packets from that address take
//! the fast path. Removing a session forgets its ufrag and every address it used, without a
//! scan of the whole table.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;

use crate::demux::{classify, stun_local_ufrag, DatagramKind};

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<Id> {
    /// From an address already bound to this session.
    Known(Id, DatagramKind),
    /// A STUN Binding request from a new address naming this session's ufrag.
    Introduced(Id),
    /// Not RTP, RTCP, DTLS or STUN by its first byte (RFC 7983).
    Malformed,
    /// From an unknown address and not a request naming a live session.
    UnknownSource,
}

/// Session lookup by address and by local ICE ufrag.
#[derive(Debug, Clone)]
pub struct Routes<Id> {
    by_addr: HashMap<SocketAddr, Id>,
    by_ufrag: HashMap<String, Id>,
    addrs_of: HashMap<Id, Vec<SocketAddr>>,
}

impl<Id> Default for Routes<Id> {
    fn default() -> Self {
        Self {
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            addrs_of: HashMap::new(),
        }
    }
}

impl<Id: Copy + Eq + Hash> Routes<Id> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a session under its local ufrag.
    pub fn add_session(&mut self, ufrag: &str, id: Id) {
        self.by_ufrag.insert(ufrag.to_owned(), id);
        self.addrs_of.entry(id).or_default();
    }

    /// A session's local ufrag changed (ICE restart): checks naming the new one introduce new
    /// addresses; the addresses it already uses keep routing to it.
    pub fn rename_session(&mut self, old: &str, new: &str, id: Id) {
        if self.by_ufrag.get(old) == Some(&id) {
            self.by_ufrag.remove(old);
        }
        self.by_ufrag.insert(new.to_owned(), id);
    }

    /// Forget a session: its ufrag and every address it was reached from.
    pub fn remove_session(&mut self, ufrag: &str, id: Id) {
        if self.by_ufrag.get(ufrag) == Some(&id) {
            self.by_ufrag.remove(ufrag);
        }
        for addr in self.addrs_of.remove(&id).unwrap_or_default() {
            if self.by_addr.get(&addr) == Some(&id) {
                self.by_addr.remove(&addr);
            }
        }
    }

    /// Route a datagram from `from`.
    pub fn route(&self, from: SocketAddr, data: &[u8]) -> Route<Id> {
        let kind = classify(data);
        if kind == DatagramKind::Unknown {
            return Route::Malformed;
        }
        if let Some(id) = self.by_addr.get(&from) {
            return Route::Known(*id, kind);
        }
        match stun_local_ufrag(data).and_then(|u| self.by_ufrag.get(u)) {
            Some(id) => Route::Introduced(*id),
            None => Route::UnknownSource,
        }
    }

    /// Bind `from` to a session after its engine accepted a check from there (a new candidate
    /// pair, a NAT rebinding). An address moves to the latest session that proved it.
    pub fn learn(&mut self, from: SocketAddr, id: Id) {
        if let Some(previous) = self.by_addr.insert(from, id) {
            if previous == id {
                return;
            }
            if let Some(list) = self.addrs_of.get_mut(&previous) {
                list.retain(|a| *a != from);
            }
        }
        self.addrs_of.entry(id).or_default().push(from);
    }

    /// The addresses a session has been reached from.
    pub fn addresses_of(&self, id: Id) -> &[SocketAddr] {
        self.addrs_of.get(&id).map_or(&[], |v| v.as_slice())
    }

    /// Sessions registered.
    pub fn sessions(&self) -> usize {
        self.by_ufrag.len()
    }

    /// Addresses bound.
    pub fn addresses(&self) -> usize {
        self.by_addr.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demux::binding_request_with_username;
    use proptest::prelude::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn new_address_is_introduced_only_by_a_check_naming_the_session() {
        let mut r = Routes::new();
        r.add_session("srv1", 1u32);
        let check = binding_request_with_username([0; 12], "srv1:cli");
        assert_eq!(r.route(addr(9), &check), Route::Introduced(1));
        let wrong = binding_request_with_username([0; 12], "other:cli");
        assert_eq!(r.route(addr(9), &wrong), Route::UnknownSource);
        assert_eq!(r.route(addr(9), &[0x80, 96, 0, 0]), Route::UnknownSource);
        assert_eq!(r.route(addr(9), &[0xff]), Route::Malformed);
        r.learn(addr(9), 1);
        assert_eq!(
            r.route(addr(9), &[0x80, 96, 0, 0]),
            Route::Known(1, DatagramKind::Rtp)
        );
    }

    #[test]
    fn after_an_ice_restart_only_the_new_ufrag_introduces_addresses() {
        let mut r = Routes::new();
        r.add_session("old", 1u32);
        r.learn(addr(1), 1);
        r.rename_session("old", "new", 1);
        let stale = binding_request_with_username([0; 12], "old:cli");
        assert_eq!(r.route(addr(2), &stale), Route::UnknownSource);
        let fresh = binding_request_with_username([0; 12], "new:cli");
        assert_eq!(r.route(addr(2), &fresh), Route::Introduced(1));
        // The address in use keeps working during the restart.
        assert_eq!(
            r.route(addr(1), &[0x80]),
            Route::Known(1, DatagramKind::Rtp)
        );
        r.learn(addr(2), 1);
        assert_eq!(r.addresses_of(1), &[addr(1), addr(2)]);
        r.remove_session("new", 1);
        assert_eq!((r.sessions(), r.addresses()), (0, 0));
    }

    #[test]
    fn removing_a_session_forgets_all_its_addresses_only() {
        let mut r = Routes::new();
        r.add_session("a", 1u32);
        r.add_session("b", 2u32);
        r.learn(addr(1), 1);
        r.learn(addr(2), 1);
        r.learn(addr(3), 2);
        r.remove_session("a", 1);
        assert_eq!(r.route(addr(1), &[0x80]), Route::UnknownSource);
        assert_eq!(r.route(addr(2), &[0x80]), Route::UnknownSource);
        assert_eq!(
            r.route(addr(3), &[0x80]),
            Route::Known(2, DatagramKind::Rtp)
        );
        assert_eq!((r.sessions(), r.addresses()), (1, 1));
    }

    #[test]
    fn an_address_moves_to_the_session_that_proved_it_last() {
        let mut r = Routes::new();
        r.add_session("a", 1u32);
        r.add_session("b", 2u32);
        r.learn(addr(7), 1);
        r.learn(addr(7), 2);
        r.remove_session("a", 1);
        assert_eq!(
            r.route(addr(7), &[0x80]),
            Route::Known(2, DatagramKind::Rtp)
        );
        r.remove_session("b", 2);
        assert_eq!(r.addresses(), 0);
    }

    proptest! {
        #[test]
        fn table_stays_consistent_under_any_operations(ops in proptest::collection::vec((0u8..3, 0u32..8, 0u16..16), 0..200)) {
            let mut r = Routes::new();
            for (op, id, port) in ops {
                let ufrag = format!("u{id}");
                match op {
                    0 => r.add_session(&ufrag, id),
                    1 => r.learn(addr(port), id),
                    _ => r.remove_session(&ufrag, id),
                }
            }
            // Every bound address is listed under exactly the session it routes to.
            for (a, id) in &r.by_addr {
                prop_assert!(r.addrs_of.get(id).is_some_and(|l| l.contains(a)));
            }
            let listed: usize = r.addrs_of.values().map(Vec::len).sum();
            prop_assert_eq!(listed, r.by_addr.len());
        }
    }
}
