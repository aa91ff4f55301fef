//! Recording what analytics report: viewer sessions (one row per WHEP viewer, from connect to
//! close), the live viewer count of every channel over the cluster ([`ViewerBoard`]: up the
//! relay tree through edges' load reports, across origins through Redis),
//! and a sample of that count per live channel every `analytics.sample_secs`.
//!
//! Viewer sessions are in [`crate::viewer_sessions`]; a sampler task calls [`sample`] on a
//! timer. The report itself is in [`crate::analytics_report`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::viewer_sessions::Tracker;
use crate::{now, LiveState};

/// Viewers below this node: at the edges connected to it and at every tier below them (from
/// their load reports; none where no edge is connected).
pub trait Below: Send + Sync {
    /// Viewers of `channel` below this node.
    fn of(&self, channel: &str) -> u64;
    /// Viewers per channel below this node.
    fn all(&self) -> HashMap<String, u64>;
}

/// Fixed counts (a node's view in tests and tools).
impl Below for HashMap<String, u64> {
    fn of(&self, channel: &str) -> u64 {
        self.get(channel).copied().unwrap_or(0)
    }
    fn all(&self) -> HashMap<String, u64> {
        self.clone()
    }
}

/// Live viewer counts of the whole cluster.
///
/// - Each viewer is counted at its node, then up the relay tree: an edge reports its own
///   viewers and those below it to its upstream (`load`), so an origin knows its whole tree
///   ([`Below`]) without any shared store.
/// - With Redis, every origin publishes its tree's counts under `{prefix}:viewers:{node}` for a
///   few sample periods and reads the other origins' counts, so a channel's count is the sum
///   over the origins. Edges only read (they are already in their origin's count).
pub struct ViewerBoard {
    node_id: String,
    redis: Option<(redis::aio::MultiplexedConnection, String)>,
    ttl: Duration,
    /// An origin publishes to Redis; an edge only reads.
    origin: bool,
    below: Option<Arc<dyn Below>>,
    /// From Redis, as of the last [`ViewerBoard::publish`]: at an origin the other origins'
    /// counts, at an edge every origin's.
    published: Mutex<HashMap<String, u64>>,
}

/// How many SCAN rounds a count may take (bounds the loop; 200 keys a round).
const MAX_SCAN_ROUNDS: usize = 100;

impl ViewerBoard {
    /// An origin's board without Redis (one origin, and the edges below it).
    pub fn local(node_id: &str) -> Self {
        Self {
            node_id: node_id.to_string(),
            redis: None,
            ttl: Duration::ZERO,
            origin: true,
            below: None,
            published: Mutex::new(HashMap::new()),
        }
    }

    /// Shared through Redis at `url`, keys under `prefix`; an origin's counts expire `ttl` after
    /// its last publish, so a dead origin stops counting within `ttl`.
    pub async fn redis(
        url: &str,
        prefix: &str,
        node_id: &str,
        ttl: Duration,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let conn = tokio::time::timeout(
            Duration::from_secs(3),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| redis::RedisError::from(std::io::Error::other("no answer from Redis")))??;
        Ok(Self {
            redis: Some((conn, prefix.to_string())),
            ttl,
            ..Self::local(node_id)
        })
    }

    /// Count the viewers below this node too.
    pub fn with_below(mut self, below: Arc<dyn Below>) -> Self {
        self.below = Some(below);
        self
    }

    /// This node is an edge: its viewers reach the origin through the relay, not Redis.
    pub fn at_edge(mut self) -> Self {
        self.origin = false;
        self
    }

    fn below_of(&self, channel: &str) -> u64 {
        self.below.as_ref().map_or(0, |b| b.of(channel))
    }

    fn published_of(&self, channel: &str) -> u64 {
        self.lock().get(channel).copied().unwrap_or(0)
    }

    /// The cluster's viewers of `channel`, given this node's exact count now.
    pub fn total(&self, channel: &str, here: u64) -> u64 {
        let tree = here + self.below_of(channel);
        match (self.origin, self.redis.is_some()) {
            (true, _) => tree + self.published_of(channel),
            // Every origin's count includes this edge's tree as of its last report; this
            // edge's own count is newer.
            (false, true) => self.published_of(channel).max(tree),
            (false, false) => tree,
        }
    }

    /// At an origin, publish this node's tree (`own` viewers and those below) and read the
    /// other origins'; at an edge, read every origin's. A Redis failure is logged and leaves
    /// the previous view.
    pub async fn publish(&self, own: &HashMap<String, u64>) {
        let Some((conn, prefix)) = &self.redis else {
            return;
        };
        let tree = self.origin.then(|| {
            let mut tree = own.clone();
            if let Some(below) = &self.below {
                for (channel, n) in below.all() {
                    *tree.entry(channel).or_insert(0) += n;
                }
            }
            tree
        });
        let mut conn = conn.clone();
        match exchange(&mut conn, prefix, &self.node_id, tree.as_ref(), self.ttl).await {
            Ok(counts) => *self.lock() = counts,
            Err(e) => tracing::warn!(error = %e, "viewer counts not shared through Redis"),
        }
    }

    /// Remove this node's counts (at shutdown).
    pub async fn withdraw(&self) {
        if let Some((conn, prefix)) = &self.redis {
            let mut conn = conn.clone();
            let key = format!("{prefix}:viewers:{}", self.node_id);
            let r: Result<(), _> = redis::cmd("DEL").arg(key).query_async(&mut conn).await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "viewer counts not withdrawn from Redis");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Write `own` (if any) under this node's key, then sum every other node's key.
async fn exchange(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    node_id: &str,
    own: Option<&HashMap<String, u64>>,
    ttl: Duration,
) -> Result<HashMap<String, u64>, redis::RedisError> {
    let mine = format!("{prefix}:viewers:{node_id}");
    if let Some(own) = own {
        let body = serde_json::to_string(own).unwrap_or_else(|_| "{}".into());
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let _: () = redis::cmd("SET")
            .arg(&mine)
            .arg(body)
            .arg("PX")
            .arg(ms)
            .query_async(conn)
            .await?;
    }
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    for _ in 0..MAX_SCAN_ROUNDS {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:viewers:*"))
            .arg("COUNT")
            .arg(200)
            .query_async(conn)
            .await?;
        keys.extend(batch.into_iter().filter(|k| *k != mine));
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let mut sum = HashMap::new();
    if keys.is_empty() {
        return Ok(sum);
    }
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
    for value in values.into_iter().flatten() {
        // Another build's or a broken value counts as nothing rather than failing the sum.
        let Ok(counts) = serde_json::from_str::<HashMap<String, u64>>(&value) else {
            continue;
        };
        for (channel, n) in counts {
            *sum.entry(channel).or_insert(0) += n;
        }
    }
    Ok(sum)
}

/// One sampler tick: share this node's counts, refresh its open sessions and, for the channels
/// whose publisher is here (`origin`), store the cluster-wide count at `t` rounded down to the
/// period. Failures are logged; the next tick tries again.
pub async fn sample(
    tracker: &Tracker,
    board: &ViewerBoard,
    here: &[(String, LiveState)],
    origin: bool,
    period_secs: u64,
) {
    let own: HashMap<String, u64> = here
        .iter()
        .map(|(name, s)| (name.clone(), s.viewers))
        .collect();
    board.publish(&own).await;
    if let Err(e) = tracker.heartbeat().await {
        tracing::warn!(error = %e, "viewer sessions not refreshed");
    }
    if !origin {
        return;
    }
    let period = i64::try_from(period_secs.max(1)).unwrap_or(1);
    let t = now() - now().rem_euclid(period);
    for (channel, state) in here.iter().filter(|(_, s)| s.live) {
        let viewers = i64::try_from(board.total(channel, state.viewers)).unwrap_or(i64::MAX);
        let written = sqlx::query(
            "INSERT INTO viewer_samples (channel, t, viewers) VALUES ($1, $2, $3) \
             ON CONFLICT (channel, t) DO UPDATE SET viewers = excluded.viewers",
        )
        .bind(channel)
        .bind(t)
        .bind(viewers)
        .execute(tracker.pool())
        .await;
        if let Err(e) = written {
            tracing::warn!(channel = %channel, error = %e, "viewer sample not stored");
        }
    }
}
