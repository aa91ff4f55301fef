//! Chat fan-out. An event (already serialized JSON, shared as `Utf8Bytes`, so a message is
//! encoded and allocated once however many sockets receive it) goes to every socket of its channel on this
//! node through a `tokio::sync::broadcast`; with Redis it goes through `PUBLISH` on
//! `{prefix}:chat:{channel}` instead, and every node (this one included) delivers what its
//! `PSUBSCRIBE {prefix}:chat:*` receives, so a message sent on node A reaches viewers on node B.
//! Per-user send limits live here too (per node).
//!
//! Each event says whom it is for ([`To`]): everyone, the channel's staff (owner and
//! moderators), its staff and one user (a held message's author), or everyone but its staff
//! (who get a marked copy instead). Sockets filter by their reader ([`Reader::wants`]); through
//! Redis the audience travels as a first line before the JSON.

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

/// Whom a chat event is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum To {
    /// Every socket of the channel.
    Everyone,
    /// Everyone but the owner and moderators (who get another copy).
    Viewers,
    /// The owner and moderators.
    Staff,
    /// The owner, the moderators and this user (by id).
    StaffAnd(String),
}

impl To {
    /// The first line of a Redis payload.
    fn tag(&self) -> String {
        match self {
            To::Everyone => "*".into(),
            To::Viewers => "v".into(),
            To::Staff => "s".into(),
            To::StaffAnd(user) => format!("s:{user}"),
        }
    }

    fn from_tag(tag: &str) -> Option<Self> {
        match tag {
            "*" => Some(To::Everyone),
            "v" => Some(To::Viewers),
            "s" => Some(To::Staff),
            t => t.strip_prefix("s:").map(|u| To::StaffAnd(u.to_string())),
        }
    }
}

/// A chat event (serialized once) and its audience.
#[derive(Debug, Clone)]
pub struct Event {
    /// Whom it is for.
    pub to: To,
    /// The JSON text.
    pub text: Utf8Bytes,
}

/// Who reads a socket: its user (if signed in) and whether they moderate the channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reader {
    /// The signed-in user's id.
    pub user: Option<String>,
    /// The channel's owner or a moderator.
    pub staff: bool,
}

impl Reader {
    /// Whether an event for `to` goes to this socket.
    pub fn wants(&self, to: &To) -> bool {
        match to {
            To::Everyone => true,
            To::Viewers => !self.staff,
            To::Staff => self.staff,
            To::StaffAnd(user) => self.staff || self.user.as_deref() == Some(user.as_str()),
        }
    }
}

/// A Redis payload: the audience's tag, a newline, the JSON.
fn encode(to: &To, text: &str) -> String {
    format!("{}\n{text}", to.tag())
}

fn decode(payload: &str) -> Option<(To, &str)> {
    let (tag, text) = payload.split_once('\n')?;
    Some((To::from_tag(tag)?, text))
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
    local: Mutex<HashMap<String, broadcast::Sender<Event>>>,
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
    pub fn join(&self, channel: &str) -> broadcast::Receiver<Event> {
        lock(&self.local)
            .entry(channel.to_string())
            .or_insert_with(|| broadcast::channel(BACKLOG).0)
            .subscribe()
    }

    /// Deliver to this node's sockets of `channel`.
    fn deliver(&self, channel: &str, event: Event) {
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
        self.publish_to(channel, To::Everyone, event).await;
    }

    /// Send an event to the sockets of `channel` whose reader is in `to`, on every node.
    pub async fn publish_to(&self, channel: &str, to: To, event: String) {
        let local = |to: To, text: String| Event {
            to,
            text: Utf8Bytes::from(text),
        };
        match &self.redis {
            None => self.deliver(channel, local(to, event)),
            Some((client, prefix)) => {
                let topic = format!("{prefix}:chat:{channel}");
                let sent = async {
                    let mut c = client.get_multiplexed_async_connection().await?;
                    redis::cmd("PUBLISH")
                        .arg(&topic)
                        .arg(encode(&to, &event))
                        .query_async::<i64>(&mut c)
                        .await
                };
                if let Err(e) = sent.await {
                    // The message is stored; this node's own viewers still get it.
                    tracing::warn!(error = %e, "chat publish to Redis failed");
                    self.deliver(channel, local(to, event));
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
                        let (Some(channel), Some((to, text))) =
                            (topic.strip_prefix(&strip), decode(&payload))
                        else {
                            continue;
                        };
                        let text = Utf8Bytes::from(text.to_string());
                        hub.deliver(channel, Event { to, text });
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
    fn each_audience_reaches_exactly_its_readers() {
        let anon = Reader::default();
        let viewer = Reader {
            user: Some("u1".into()),
            staff: false,
        };
        let author = Reader {
            user: Some("u2".into()),
            staff: false,
        };
        let moderator = Reader {
            user: Some("u3".into()),
            staff: true,
        };
        let held = To::StaffAnd("u2".into());
        let cases = [
            (To::Everyone, [true, true, true, true]),
            (To::Viewers, [true, true, true, false]),
            (To::Staff, [false, false, false, true]),
            (held, [false, false, true, true]),
        ];
        for (to, want) in cases {
            let got = [&anon, &viewer, &author, &moderator].map(|r| r.wants(&to));
            assert_eq!(got, want, "{to:?}");
        }
    }

    #[test]
    fn an_audience_survives_the_redis_payload() {
        for to in [
            To::Everyone,
            To::Viewers,
            To::Staff,
            To::StaffAnd("u_1f".into()),
        ] {
            let text = r#"{"type":"message","body":"two\nlines"}"#;
            let payload = encode(&to, text);
            assert_eq!(decode(&payload), Some((to, text)));
        }
        assert_eq!(decode("no newline"), None);
        assert_eq!(decode("x\n{}"), None);
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
