//! Viewer sessions: one `viewer_sessions` row per WHEP viewer, from connect to close, for watch
//! time and unique viewers. The node's event watcher hands events to a [`Recorder`], which
//! writes them in the background, in order, a batch per transaction, so a burst of viewers
//! never holds up the event loop (whose channel would otherwise overflow and lose events).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use storage::Store;
use tokio::sync::mpsc;

use crate::accounts::random_hex;
use crate::now;

/// The most events one transaction takes.
const MAX_BATCH: usize = 512;

/// A viewer session event, timed when it happened (not when it is written).
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// A viewer (`client`: its address and user agent) connected to `channel` as `peer`.
    Joined {
        /// The SFU's peer number.
        peer: u64,
        /// Channel watched.
        channel: String,
        /// `address\nuser agent`.
        client: String,
        /// Seconds since the Unix epoch.
        at: i64,
    },
    /// `peer` went away.
    Left {
        /// The SFU's peer number.
        peer: u64,
        /// Seconds since the Unix epoch.
        at: i64,
    },
}

/// Viewer sessions of this node.
pub struct Tracker {
    store: Store,
    node_id: String,
    salt: Vec<u8>,
    /// Open sessions: peer number -> row id.
    open: Mutex<HashMap<u64, String>>,
}

impl Tracker {
    /// Sessions of node `node_id`; viewers are told apart by an HMAC under `salt` (a cluster
    /// secret), so the same viewer counts once on every node and no address is stored.
    pub fn new(store: Store, node_id: &str, salt: &[u8]) -> Self {
        Self {
            store,
            node_id: node_id.to_string(),
            salt: salt.to_vec(),
            open: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn pool(&self) -> &sqlx::AnyPool {
        self.store.pool()
    }

    /// At start: sessions this node left open when it died end where it last saw them.
    pub async fn recover(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE viewer_sessions SET ended_at = last_seen \
             WHERE node_id = $1 AND ended_at IS NULL",
        )
        .bind(&self.node_id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// At shutdown: every session still open on this node ends now.
    pub async fn finish(&self) -> Result<(), sqlx::Error> {
        let t = now();
        sqlx::query(
            "UPDATE viewer_sessions SET ended_at = $1, last_seen = $1 \
             WHERE node_id = $2 AND ended_at IS NULL",
        )
        .bind(t)
        .bind(&self.node_id)
        .execute(self.pool())
        .await?;
        self.lock().clear();
        Ok(())
    }

    /// A viewer connected, written now (see [`SessionEvent::Joined`]).
    pub async fn joined(&self, peer: u64, channel: &str, client: &str) -> Result<(), sqlx::Error> {
        let (channel, client) = (channel.to_string(), client.to_string());
        let at = now();
        self.apply(vec![SessionEvent::Joined {
            peer,
            channel,
            client,
            at,
        }])
        .await
    }

    /// `peer` went away, written now.
    pub async fn left(&self, peer: u64) -> Result<(), sqlx::Error> {
        self.apply(vec![SessionEvent::Left { peer, at: now() }])
            .await
    }

    /// Write `events` in order, in one transaction. A second `Joined` of an open peer (an ICE
    /// restart) is the same session; a `Left` of an unknown peer is nothing.
    pub async fn apply(&self, events: Vec<SessionEvent>) -> Result<(), sqlx::Error> {
        let mut tx = self.pool().begin().await?;
        // What this batch opens and closes, applied to `open` once it is committed.
        let mut opened: Vec<(u64, String)> = Vec::new();
        let mut closed: Vec<u64> = Vec::new();
        for event in events {
            match event {
                SessionEvent::Joined {
                    peer,
                    channel,
                    client,
                    at,
                } => {
                    let known = opened.iter().any(|(p, _)| *p == peer)
                        || (self.lock().contains_key(&peer) && !closed.contains(&peer));
                    if known {
                        continue;
                    }
                    let id = format!(
                        "v_{}",
                        random_hex(12).map_err(|e| sqlx::Error::Protocol(e.to_string()))?
                    );
                    let stream: Option<(String,)> = sqlx::query_as(
                        "SELECT id FROM streams WHERE channel = $1 AND ended_at IS NULL \
                         ORDER BY started_at DESC",
                    )
                    .bind(&channel)
                    .fetch_optional(&mut *tx)
                    .await?;
                    sqlx::query(
                        "INSERT INTO viewer_sessions \
                         (id, channel, stream_id, viewer, node_id, started_at, last_seen) \
                         VALUES ($1, $2, $3, $4, $5, $6, $6)",
                    )
                    .bind(&id)
                    .bind(&channel)
                    .bind(stream.map(|s| s.0))
                    .bind(self.viewer_id(&client))
                    .bind(&self.node_id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                    closed.retain(|p| *p != peer);
                    opened.push((peer, id));
                }
                SessionEvent::Left { peer, at } => {
                    let id = match opened.iter().position(|(p, _)| *p == peer) {
                        Some(i) => Some(opened.remove(i).1),
                        None if closed.contains(&peer) => None,
                        None => self.lock().get(&peer).cloned(),
                    };
                    let Some(id) = id else { continue };
                    sqlx::query(
                        "UPDATE viewer_sessions SET ended_at = $1, last_seen = $1 WHERE id = $2",
                    )
                    .bind(at)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    closed.push(peer);
                }
            }
        }
        tx.commit().await?;
        let mut open = self.lock();
        for peer in closed {
            open.remove(&peer);
        }
        open.extend(opened);
        Ok(())
    }

    /// Open sessions of this node.
    pub fn open_sessions(&self) -> usize {
        self.lock().len()
    }

    /// Every open session is still there: refresh `last_seen`.
    pub(crate) async fn heartbeat(&self) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE viewer_sessions SET last_seen = $1 WHERE node_id = $2 AND ended_at IS NULL",
        )
        .bind(now())
        .bind(&self.node_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    fn viewer_id(&self, client: &str) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.salt) else {
            return String::new(); // HMAC takes keys of any length
        };
        mac.update(client.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, String>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Hands session events to a background writer; never waits.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<SessionEvent>,
}

impl Recorder {
    /// Start the writer (on the current runtime). It ends when every `Recorder` is dropped,
    /// after writing what was queued.
    pub fn spawn(tracker: Arc<Tracker>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(event) => batch.push(event),
                        Err(_) => break,
                    }
                }
                let n = batch.len();
                if let Err(e) = tracker.apply(batch).await {
                    tracing::warn!(events = n, error = %e, "viewer session events not written");
                }
            }
        });
        (Self { tx }, task)
    }

    /// A viewer connected now.
    pub fn joined(&self, peer: u64, channel: &str, client: &str) {
        let event = SessionEvent::Joined {
            peer,
            channel: channel.to_string(),
            client: client.to_string(),
            at: now(),
        };
        // The writer only stops at shutdown, when nothing is left to record.
        let _ = self.tx.send(event);
    }

    /// `peer` went away now.
    pub fn left(&self, peer: u64) {
        let _ = self.tx.send(SessionEvent::Left { peer, at: now() });
    }
}
