//! The audience below a node: the WHEP viewers of each channel at the edges connected to it and
//! at every tier below them, as their `load` reports say. An edge reports its own viewers plus
//! its own audience, so each viewer is counted once, at every level up to the origin, without
//! any shared store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Viewers per channel below this node, by the edge that reported them.
#[derive(Debug, Default)]
pub struct Audience {
    by_edge: Mutex<HashMap<String, BTreeMap<String, u32>>>,
}

impl Audience {
    /// Edge `edge` reported `counts` (its viewers and those below it, per channel).
    pub fn set(&self, edge: &str, counts: BTreeMap<String, u32>) {
        self.lock().insert(edge.to_string(), counts);
    }

    /// Edge `edge` is gone: its viewers are no longer below this node.
    pub fn remove(&self, edge: &str) {
        self.lock().remove(edge);
    }

    /// Viewers of `channel` below this node.
    pub fn of(&self, channel: &str) -> u64 {
        self.lock()
            .values()
            .filter_map(|counts| counts.get(channel))
            .map(|n| u64::from(*n))
            .sum()
    }

    /// Viewers per channel below this node, summed over its edges.
    pub fn totals(&self) -> HashMap<String, u64> {
        let mut sum = HashMap::new();
        for counts in self.lock().values() {
            for (channel, n) in counts {
                *sum.entry(channel.clone()).or_insert(0) += u64::from(*n);
            }
        }
        sum
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeMap<String, u32>>> {
        self.by_edge.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_summed_per_channel_and_a_gone_edge_stops_counting() {
        let a = Audience::default();
        let counts = |pairs: &[(&str, u32)]| -> BTreeMap<String, u32> {
            pairs.iter().map(|(c, n)| (c.to_string(), *n)).collect()
        };
        a.set("eu-1", counts(&[("show", 3), ("news", 1)]));
        a.set("us-1", counts(&[("show", 4)]));
        a.set("eu-1", counts(&[("show", 5), ("news", 1)])); // a newer report replaces
        let t = a.totals();
        assert_eq!((t["show"], t["news"]), (9, 1));
        assert_eq!((a.of("show"), a.of("news"), a.of("none")), (9, 1, 0));
        a.remove("us-1");
        assert_eq!(a.totals()["show"], 5);
        a.remove("eu-1");
        assert!(a.totals().is_empty());
    }
}
