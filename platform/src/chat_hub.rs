//! Chat fan-out. An event (already serialized JSON, shared as `Utf8Bytes`, so a message is
//! encoded and allocated once however many sockets receive it) goes to every socket of its channel on this
//! node through a `tokio::sync::broadcast`; with Redis it goes through `PUBLISH` on
//! `{prefix}:chat:{channel}` instead, and every node (this one included) delivers what its
//! `PSUBSCRIBE {prefix}:chat:*` receives, so a message sent on node A reaches viewers on node B.
//! Per-user send limits live here too (per node).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::broadcast;

/// Events a socket may fall behind by before it is told it lagged.
const BACKLOG: usize = 1024;
/// Send rate per user per channel: a bucket of this many messages...
const BURST: f64 = 5.0;
/// ...refilled at this many per second.
const REFILL_PER_SEC: f64 = 1.0;

/// Per (channel, user): token bucket and last accepted message.
struct Sender {
    tokens: f64,
    at: Instant,
    last_sent: Option<Instant>,
}

/// Why a send was refused by the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// Over the per-user rate.
    Rate,
    /// Slow mode: wait this long.
    Slow(Duration),
}

/// Where chat events go.
pub struct ChatHub {
    local: Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>,
    senders: Mutex<HashMap<(String, String), Sender>>,
    redis: Option<(redis::Client, String)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ChatHub {
    /// Fan-out inside this process only (one node).
    pub fn local() -> Arc<Self> {
        Arc::new(Self {
            local: Mutex::new(HashMap::new()),
            senders: Mutex::new(HashMap::new()),
            redis: None,
        })
    }

    /// Fan-out through Redis at `url` (keys under `prefix`), shared by every node. Starts the
    /// subscriber task (on the current runtime), which reconnects on its own.
    pub async fn redis(url: &str, prefix: &str) -> Result<Arc<Self>, redis::RedisError> {
        let client = redis::Client::open(url)?;
        // Fail at start, not at the first message, when Redis is not there.
        let mut conn = tokio::time::timeout(
            Duration::from_secs(3),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| redis::RedisError::from(std::io::Error::other("no answer from Redis")))??;
        let _: () = redis::cmd("PING").query_async(&mut conn).await?;
        let hub = Arc::new(Self {
            local: Mutex::new(HashMap::new()),
            senders: Mutex::new(HashMap::new()),
            redis: Some((client.clone(), prefix.to_string())),
        });
        // Deliveries come only through the subscription: wait until it is in place.
        let (ready, subscribed) = tokio::sync::oneshot::channel();
        tokio::spawn(subscribe(
            Arc::downgrade(&hub),
            client,
            prefix.to_string(),
            Some(ready),
        ));
        tokio::time::timeout(Duration::from_secs(3), subscribed)
            .await
            .map_err(|_| redis::RedisError::from(std::io::Error::other("no Redis subscription")))?
            .map_err(|_| redis::RedisError::from(std::io::Error::other("no Redis subscription")))?;
        Ok(hub)
    }

    /// Receive the events of `channel` from now on.
    pub fn join(&self, channel: &str) -> broadcast::Receiver<Utf8Bytes> {
        lock(&self.local)
            .entry(channel.to_string())
            .or_insert_with(|| broadcast::channel(BACKLOG).0)
            .subscribe()
    }

    /// Deliver to this node's sockets of `channel`.
    fn deliver(&self, channel: &str, event: Utf8Bytes) {
        let mut map = lock(&self.local);
        if let Some(tx) = map.get(channel) {
            if tx.send(event).is_err() {
                // Nobody listens any more.
                map.remove(channel);
            }
        }
    }

    /// Send an event to every socket of `channel`, on every node.
    pub async fn publish(&self, channel: &str, event: String) {
        match &self.redis {
            None => self.deliver(channel, Utf8Bytes::from(event)),
            Some((client, prefix)) => {
                let topic = format!("{prefix}:chat:{channel}");
                let sent = async {
                    let mut c = client.get_multiplexed_async_connection().await?;
                    redis::cmd("PUBLISH")
                        .arg(&topic)
                        .arg(&event)
                        .query_async::<i64>(&mut c)
                        .await
                };
                if let Err(e) = sent.await {
                    // The message is stored; this node's own viewers still get it.
                    tracing::warn!(error = %e, "chat publish to Redis failed");
                    self.deliver(channel, Utf8Bytes::from(event));
                }
            }
        }
    }

    /// Apply the per-user rate limit and the channel's slow mode; on success the message is
    /// counted.
    pub fn admit(&self, channel: &str, user: &str, slow: Duration) -> Result<(), Limited> {
        let now = Instant::now();
        let mut map = lock(&self.senders);
        let s = map
            .entry((channel.to_string(), user.to_string()))
            .or_insert(Sender {
                tokens: BURST,
                at: now,
                last_sent: None,
            });
        if let Some(last) = s.last_sent {
            let since = now.saturating_duration_since(last);
            if since < slow {
                return Err(Limited::Slow(slow - since));
            }
        }
        let refill = now.saturating_duration_since(s.at).as_secs_f64() * REFILL_PER_SEC;
        s.tokens = (s.tokens + refill).min(BURST);
        s.at = now;
        if s.tokens < 1.0 {
            return Err(Limited::Rate);
        }
        s.tokens -= 1.0;
        s.last_sent = Some(now);
        Ok(())
    }
}

/// The Redis subscriber: deliver every `{prefix}:chat:*` message locally, reconnecting with
/// backoff; ends when the hub is gone.
async fn subscribe(
    hub: std::sync::Weak<ChatHub>,
    client: redis::Client,
    prefix: String,
    mut ready: Option<tokio::sync::oneshot::Sender<()>>,
) {
    use futures_util::StreamExt;
    let pattern = format!("{prefix}:chat:*");
    let strip = format!("{prefix}:chat:");
    let mut backoff = Duration::from_millis(100);
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                if pubsub.psubscribe(&pattern).await.is_ok() {
                    backoff = Duration::from_millis(100);
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let Some(hub) = hub.upgrade() else { return };
                        let topic = msg.get_channel_name().to_string();
                        let Ok(payload) = msg.get_payload::<String>() else {
                            continue;
                        };
                        if let Some(channel) = topic.strip_prefix(&strip) {
                            hub.deliver(channel, Utf8Bytes::from(payload));
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "chat subscriber: Redis unavailable"),
        }
        if hub.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_may_burst_five_messages_then_one_per_second() {
        let hub = ChatHub::local();
        for _ in 0..5 {
            assert_eq!(hub.admit("c", "u", Duration::ZERO), Ok(()));
        }
        assert_eq!(hub.admit("c", "u", Duration::ZERO), Err(Limited::Rate));
        // Another user, or the same user elsewhere, is not affected.
        assert_eq!(hub.admit("c", "v", Duration::ZERO), Ok(()));
        assert_eq!(hub.admit("d", "u", Duration::ZERO), Ok(()));
    }

    #[test]
    fn slow_mode_spaces_one_users_messages() {
        let hub = ChatHub::local();
        assert_eq!(hub.admit("c", "u", Duration::from_secs(30)), Ok(()));
        assert!(matches!(
            hub.admit("c", "u", Duration::from_secs(30)),
            Err(Limited::Slow(d)) if d > Duration::from_secs(29)
        ));
    }
}
