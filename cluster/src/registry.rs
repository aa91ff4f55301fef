//! The cluster registry: edges (region, public URL, load) and live channels, each with a TTL so
//! that a node that dies disappears within seconds and a restarted node leaves nothing stale.
//!
//! Embedded (one node's memory) by default; in Redis when several origins share it. Both
//! backends behave the same, and the same tests run against both (`tests/registry.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::registry_redis::RedisRegistry;

/// Registry failures (Redis only: the embedded registry cannot fail).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Redis refused or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No answer from Redis at this URL within a few seconds.
    #[error("redis: no answer from {0}")]
    Unreachable(String),
    /// A stored value was not a record of ours.
    #[error("malformed registry value: {0}")]
    Malformed(String),
}

/// An edge as it reported itself, kept for one TTL after its last report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeRecord {
    /// The edge's node id (unique in the cluster).
    pub node_id: String,
    /// Its region.
    pub region: String,
    /// Base URL its viewers reach it at (`http://host:port`).
    pub public_url: String,
    /// Viewers it serves now (including relays below it).
    pub viewers: u32,
    /// Viewers it accepts.
    pub capacity: u32,
    /// Shutting down: no new viewers.
    pub draining: bool,
    /// The node the edge is connected to, which writes this record.
    pub via: String,
}

impl EdgeRecord {
    /// Accepts new viewers: not draining and below capacity.
    pub fn healthy(&self) -> bool {
        !self.draining && self.viewers < self.capacity
    }

    /// `self` is less loaded than `other` (fraction of capacity in use; ties by node id).
    fn lighter_than(&self, other: &EdgeRecord) -> bool {
        let mine = u64::from(self.viewers) * u64::from(other.capacity.max(1));
        let theirs = u64::from(other.viewers) * u64::from(self.capacity.max(1));
        mine < theirs || (mine == theirs && self.node_id < other.node_id)
    }
}

/// The least-loaded healthy edge among `edges`.
pub fn least_loaded(edges: &[EdgeRecord]) -> Option<&EdgeRecord> {
    edges
        .iter()
        .filter(|e| e.healthy())
        .fold(None, |best: Option<&EdgeRecord>, e| match best {
            Some(b) if !e.lighter_than(b) => Some(b),
            _ => Some(e),
        })
}

/// Which node a channel is live at (its publisher is connected there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveRecord {
    /// Channel name.
    pub channel: String,
    /// The node with the publisher.
    pub node_id: String,
    /// That node's base URL.
    pub public_url: String,
}

/// The registry, embedded or in Redis. Cheap to clone.
#[derive(Clone)]
pub enum Registry {
    /// In this process (one origin and the edges connected to it).
    Embedded(Arc<Embedded>),
    /// In Redis, shared by several nodes.
    Redis(RedisRegistry),
}

impl Registry {
    /// A registry in this process's memory.
    pub fn embedded() -> Self {
        Registry::Embedded(Arc::new(Embedded::default()))
    }

    /// A registry in Redis at `url` (`redis://127.0.0.1:6379`), its keys under `prefix`.
    /// Connects at once, so a wrong URL fails at start, not at the first viewer.
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, RegistryError> {
        Ok(Registry::Redis(RedisRegistry::connect(url, prefix).await?))
    }

    /// Which backend, for logs: `embedded` or `redis`.
    pub fn backend(&self) -> &'static str {
        match self {
            Registry::Embedded(_) => "embedded",
            Registry::Redis(_) => "redis",
        }
    }

    /// Record (or refresh) an edge for `ttl`.
    pub async fn put_edge(&self, edge: &EdgeRecord, ttl: Duration) -> Result<(), RegistryError> {
        match self {
            Registry::Embedded(m) => {
                m.edges()
                    .insert(edge.node_id.clone(), (edge.clone(), Instant::now() + ttl));
                Ok(())
            }
            Registry::Redis(r) => r.put_edge(edge, ttl).await,
        }
    }

    /// Remove an edge that disconnected from node `via`. A record written since by another
    /// node (the edge moved there) is left alone.
    pub async fn remove_edge(&self, node_id: &str, via: &str) -> Result<(), RegistryError> {
        match self {
            Registry::Embedded(m) => {
                let mut map = m.edges();
                if map.get(node_id).is_some_and(|(e, _)| e.via == via) {
                    map.remove(node_id);
                }
                Ok(())
            }
            Registry::Redis(r) => r.remove_edge(node_id, via).await,
        }
    }

    /// Edges whose TTL has not run out, in `region` (or all), sorted by node id.
    pub async fn edges(&self, region: Option<&str>) -> Result<Vec<EdgeRecord>, RegistryError> {
        let mut all = match self {
            Registry::Embedded(m) => {
                let now = Instant::now();
                let mut map = m.edges();
                map.retain(|_, (_, until)| *until > now);
                map.values().map(|(e, _)| e.clone()).collect()
            }
            Registry::Redis(r) => r.edges().await?,
        };
        all.retain(|e| region.is_none_or(|r| e.region == r));
        all.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(all)
    }

    /// The least-loaded healthy edge in `region`, other than `except` (the asking node).
    pub async fn pick_edge(
        &self,
        region: &str,
        except: &str,
    ) -> Result<Option<EdgeRecord>, RegistryError> {
        let mut edges = self.edges(Some(region)).await?;
        edges.retain(|e| e.node_id != except);
        Ok(least_loaded(&edges).cloned())
    }

    /// Record that `live.channel` is live at `live.node_id`, for `ttl`.
    pub async fn put_live(&self, live: &LiveRecord, ttl: Duration) -> Result<(), RegistryError> {
        match self {
            Registry::Embedded(m) => {
                m.live()
                    .insert(live.channel.clone(), (live.clone(), Instant::now() + ttl));
                Ok(())
            }
            Registry::Redis(r) => r.put_live(live, ttl).await,
        }
    }

    /// Forget that `channel` is live at `node_id` (its publisher left). A record of another
    /// node (the publisher moved there) is left alone.
    pub async fn remove_live(&self, channel: &str, node_id: &str) -> Result<(), RegistryError> {
        match self {
            Registry::Embedded(m) => {
                let mut map = m.live();
                if map.get(channel).is_some_and(|(l, _)| l.node_id == node_id) {
                    map.remove(channel);
                }
                Ok(())
            }
            Registry::Redis(r) => r.remove_live(channel, node_id).await,
        }
    }

    /// Where `channel` is live, if anywhere.
    pub async fn live(&self, channel: &str) -> Result<Option<LiveRecord>, RegistryError> {
        match self {
            Registry::Embedded(m) => {
                let now = Instant::now();
                let mut map = m.live();
                map.retain(|_, (_, until)| *until > now);
                Ok(map.get(channel).map(|(l, _)| l.clone()))
            }
            Registry::Redis(r) => r.live(channel).await,
        }
    }

    /// A node (re)starts: remove what it wrote in a previous life (its live channels, the
    /// edges connected through it), so a restart leaves nothing stale even before TTLs run out.
    pub async fn forget_node(&self, node_id: &str) -> Result<(), RegistryError> {
        match self {
            Registry::Embedded(m) => {
                m.edges().retain(|_, (e, _)| e.via != node_id);
                m.live().retain(|_, (l, _)| l.node_id != node_id);
                Ok(())
            }
            Registry::Redis(r) => r.forget_node(node_id).await,
        }
    }
}

/// The embedded backend.
#[derive(Default)]
pub struct Embedded {
    edges: Mutex<HashMap<String, (EdgeRecord, Instant)>>,
    live: Mutex<HashMap<String, (LiveRecord, Instant)>>,
}

type Guard<'a, T> = std::sync::MutexGuard<'a, HashMap<String, (T, Instant)>>;

impl Embedded {
    fn edges(&self) -> Guard<'_, EdgeRecord> {
        self.edges.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn live(&self) -> Guard<'_, LiveRecord> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(id: &str, viewers: u32, capacity: u32) -> EdgeRecord {
        EdgeRecord {
            node_id: id.into(),
            region: "eu".into(),
            public_url: format!("http://{id}"),
            viewers,
            capacity,
            draining: false,
            via: "origin".into(),
        }
    }

    #[test]
    fn the_least_loaded_edge_is_by_fraction_of_capacity_not_by_viewer_count() {
        let edges = [edge("a", 50, 100), edge("b", 60, 1000), edge("c", 1, 2)];
        assert_eq!(least_loaded(&edges).unwrap().node_id, "b");
    }

    #[test]
    fn full_and_draining_edges_are_never_picked() {
        let mut draining = edge("a", 0, 100);
        draining.draining = true;
        let edges = [draining, edge("b", 10, 10)];
        assert!(least_loaded(&edges).is_none());
    }

    #[test]
    fn equal_load_picks_the_same_edge_every_time() {
        let edges = [edge("b", 1, 10), edge("a", 1, 10)];
        assert_eq!(least_loaded(&edges).unwrap().node_id, "a");
    }
}
