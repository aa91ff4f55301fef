//! A viewer's K video slots. Slot 0 shows the featured participant; slots 1 to K-1 show the
//! others. The rules, so that a player's layout does not jump:
//! - A participant keeps its slot while it stays: joins and leaves of others never move it.
//! - A joining participant takes the lowest free slot (slot 0 first, when nobody is featured);
//!   with every slot taken it waits, and takes the first slot that frees, in join order.
//! - Featuring another participant swaps exactly two slots: the new featured one's and slot 0.
//!   (A waiting participant featured takes slot 0, and the old featured one waits first in
//!   line.)
//! - When the featured participant leaves, the participant in the lowest other slot is
//!   featured (its slot then goes to the first waiting one): slot 0 is never left empty while
//!   anyone is on the stage.

use crate::ParticipantId;

/// The slots of one viewer (K = the video sections of its offer).
#[derive(Debug, Clone)]
pub struct Slots {
    /// Slot 0.
    featured: Option<ParticipantId>,
    /// Slots 1 to K-1.
    others: Vec<Option<ParticipantId>>,
    /// Participants without a slot, in join order.
    waiting: Vec<ParticipantId>,
}

impl Slots {
    /// `k` slots (at least one).
    pub fn new(k: usize) -> Self {
        Self {
            featured: None,
            others: vec![None; k.max(1) - 1],
            waiting: Vec::new(),
        }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        1 + self.others.len()
    }

    /// Never: there is always slot 0.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Who each slot shows, slot 0 first.
    pub fn layout(&self) -> Vec<Option<ParticipantId>> {
        std::iter::once(self.featured)
            .chain(self.others.iter().copied())
            .collect()
    }

    /// The slot `p` is shown in, if any.
    pub fn slot_of(&self, p: ParticipantId) -> Option<usize> {
        if self.featured == Some(p) {
            return Some(0);
        }
        self.others
            .iter()
            .position(|o| *o == Some(p))
            .map(|i| i + 1)
    }

    /// The featured participant (slot 0).
    pub fn featured(&self) -> Option<ParticipantId> {
        self.featured
    }

    fn contains(&self, p: ParticipantId) -> bool {
        self.slot_of(p).is_some() || self.waiting.contains(&p)
    }

    /// `p` joins the stage (a second join is ignored).
    pub fn join(&mut self, p: ParticipantId) {
        if self.contains(p) {
            return;
        }
        if self.featured.is_none() {
            self.featured = Some(p);
        } else if let Some(free) = self.others.iter_mut().find(|o| o.is_none()) {
            *free = Some(p);
        } else {
            self.waiting.push(p);
        }
    }

    /// `p` leaves the stage.
    pub fn leave(&mut self, p: ParticipantId) {
        self.waiting.retain(|w| *w != p);
        if self.featured == Some(p) {
            self.featured = None;
            // Slot 0 is never empty while anyone is on the stage.
            if let Some(i) = self.others.iter().position(Option::is_some) {
                self.featured = self.others[i].take();
                self.fill(i);
            } else if !self.waiting.is_empty() {
                self.featured = Some(self.waiting.remove(0));
            }
            return;
        }
        if let Some(i) = self.others.iter().position(|o| *o == Some(p)) {
            self.others[i] = None;
            self.fill(i);
        }
    }

    /// Give other slot `i`, just freed, to the first waiting participant.
    fn fill(&mut self, i: usize) {
        if !self.waiting.is_empty() {
            self.others[i] = Some(self.waiting.remove(0));
        }
    }

    /// Feature `p` (the active speaker, or the owner's pin). Returns whether slot 0 changed.
    pub fn feature(&mut self, p: ParticipantId) -> bool {
        if self.featured == Some(p) || !self.contains(p) {
            return false;
        }
        let old = self.featured.replace(p);
        if let Some(i) = self.others.iter().position(|o| *o == Some(p)) {
            self.others[i] = old;
        } else {
            self.waiting.retain(|w| *w != p);
            if let Some(old) = old {
                self.waiting.insert(0, old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(n: u64) -> ParticipantId {
        ParticipantId(n)
    }

    fn shown(s: &Slots) -> Vec<Option<u64>> {
        s.layout().iter().map(|o| o.map(|p| p.0)).collect()
    }

    #[test]
    fn participants_keep_their_slots_while_others_come_and_go() {
        let mut s = Slots::new(3);
        for n in 1..=4 {
            s.join(p(n));
        }
        assert_eq!(shown(&s), [Some(1), Some(2), Some(3)]);
        s.leave(p(2));
        assert_eq!(
            shown(&s),
            [Some(1), Some(4), Some(3)],
            "4 waited and takes 2's slot"
        );
        s.join(p(5));
        s.leave(p(4));
        assert_eq!(shown(&s), [Some(1), Some(5), Some(3)]);
        s.join(p(5)); // twice: ignored
        assert_eq!(shown(&s), [Some(1), Some(5), Some(3)]);
    }

    #[test]
    fn featuring_swaps_exactly_two_slots() {
        let mut s = Slots::new(4);
        for n in 1..=4 {
            s.join(p(n));
        }
        assert!(s.feature(p(3)));
        assert_eq!(shown(&s), [Some(3), Some(2), Some(1), Some(4)]);
        assert!(!s.feature(p(3)), "already featured");
        assert!(!s.feature(p(9)), "not on the stage");
    }

    #[test]
    fn a_single_slot_shows_the_featured_participant() {
        let mut s = Slots::new(1);
        s.join(p(1));
        s.join(p(2));
        assert_eq!(shown(&s), [Some(1)]);
        assert!(s.feature(p(2)));
        assert_eq!(shown(&s), [Some(2)]);
        s.leave(p(2));
        assert_eq!(shown(&s), [Some(1)], "the one waiting is featured");
        s.leave(p(1));
        assert_eq!(shown(&s), [None]);
    }

    #[test]
    fn the_featured_leaving_promotes_the_lowest_other_slot() {
        let mut s = Slots::new(3);
        for n in 1..=4 {
            s.join(p(n));
        }
        s.leave(p(1));
        assert_eq!(shown(&s), [Some(2), Some(4), Some(3)]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Join(u64),
        Leave(u64),
        Feature(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..8u64).prop_map(Op::Join),
            (0..8u64).prop_map(Op::Leave),
            (0..8u64).prop_map(Op::Feature),
        ]
    }

    proptest! {
        #[test]
        fn slots_hold_each_participant_once_and_move_only_whom_an_operation_names(
            k in 1usize..6,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let mut s = Slots::new(k);
            let mut present: Vec<u64> = Vec::new();
            for op in ops {
                let before = s.layout();
                match op {
                    Op::Join(n) => { s.join(p(n)); if !present.contains(&n) { present.push(n); } }
                    Op::Leave(n) => { s.leave(p(n)); present.retain(|x| *x != n); }
                    Op::Feature(n) => { s.feature(p(n)); }
                }
                let after = s.layout();
                let mut seen: Vec<u64> = after.iter().flatten().map(|x| x.0).collect();
                let shown_count = seen.len();
                seen.sort_unstable();
                seen.dedup();
                prop_assert_eq!(seen.len(), shown_count, "someone shown twice: {:?}", after);
                prop_assert!(seen.iter().all(|x| present.contains(x)));
                // Slots are used before anyone waits, and slot 0 first.
                prop_assert_eq!(shown_count, present.len().min(k));
                prop_assert_eq!(after[0].is_some(), !present.is_empty());
                // Whoever the operation does not name keeps its slot, except: a featured
                // leave promotes one, a feature swaps with slot 0, a freed slot is filled.
                let named = match op { Op::Join(n) | Op::Leave(n) | Op::Feature(n) => n };
                let moved = before.iter().zip(&after).enumerate()
                    .filter(|(i, (b, a))| b != a && b.is_some() && b.map(|x| x.0) != Some(named) && *i != 0)
                    .count();
                prop_assert!(moved <= 1, "{:?} -> {:?} on {:?}", before, after, op);
            }
        }
    }
}
