//! The platform API's limits and their state: password hashing behind a small semaphore with a
//! bounded queue (Argon2id takes 19 MiB and tens of ms per hash: a flood must not take the
//! node's memory or its blocking threads), chat sockets per client address, API keys per user,
//! webhooks per channel. Refusals are counted in the node's [`Refusals`] when it gives one
//! (its metrics: `aethex_refused_total{reason}`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_common::{ApiError, Refusals};

/// Configured limits (`[limits]` and `[webhooks]` in `config.toml`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Password hashes computed at once.
    pub password_hash_concurrency: usize,
    /// Password hashes waiting for a slot before requests get 503.
    pub password_hash_queue: usize,
    /// API keys one user may hold.
    pub api_keys_per_user: usize,
    /// Chat sockets per client address (IPv6: per /64).
    pub chat_sockets_per_ip: usize,
    /// A chat socket silent this long is closed (the server pings at a third of it).
    pub chat_idle_timeout: Duration,
    /// Webhooks one channel may have.
    pub webhooks_per_channel: usize,
    /// Webhook destinations on private networks are allowed.
    pub webhooks_allow_private: bool,
    /// Client addresses no per-address limit applies to.
    pub exempt: Vec<cluster::Cidr>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            password_hash_concurrency: 2,
            password_hash_queue: 32,
            api_keys_per_user: 10,
            chat_sockets_per_ip: 20,
            chat_idle_timeout: Duration::from_secs(60),
            webhooks_per_channel: 10,
            webhooks_allow_private: false,
            exempt: http_common::loopback(),
        }
    }
}

/// The limits with their live state.
pub struct Guards {
    /// The configured limits.
    pub limits: Limits,
    hashing: tokio::sync::Semaphore,
    in_hashing: AtomicUsize,
    sockets: Mutex<HashMap<IpAddr, usize>>,
    refusals: Option<Arc<dyn Refusals>>,
}

impl Default for Guards {
    fn default() -> Self {
        Self::new(Limits::default(), None)
    }
}

/// Decrements a counter when dropped (the request finished or was cancelled).
struct Held<'a>(&'a AtomicUsize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One open chat socket of a client address; released on drop.
pub struct SocketSlot {
    guards: Arc<Guards>,
    key: Option<IpAddr>,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut map = self
            .guards
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&key);
            }
        }
    }
}

impl Guards {
    /// Fresh state; refusals counted in `refusals` when given.
    pub fn new(limits: Limits, refusals: Option<Arc<dyn Refusals>>) -> Self {
        Self {
            hashing: tokio::sync::Semaphore::new(limits.password_hash_concurrency.max(1)),
            limits,
            in_hashing: AtomicUsize::new(0),
            sockets: Mutex::new(HashMap::new()),
            refusals,
        }
    }

    /// Count a refusal.
    pub fn refused(&self, reason: &'static str) {
        if let Some(r) = &self.refusals {
            r.refused(reason);
        }
    }

    /// Run a password hash (or verification) on a blocking thread, at most
    /// `password_hash_concurrency` at once; with the queue full, 503 `busy` at once.
    pub async fn hash<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let cap = self.limits.password_hash_concurrency + self.limits.password_hash_queue;
        if self.in_hashing.fetch_add(1, Ordering::SeqCst) >= cap {
            self.in_hashing.fetch_sub(1, Ordering::SeqCst);
            self.refused("password_hash_queue");
            return Err(ApiError::Busy(
                "too many sign-ins and registrations at once; retry in a second",
            ));
        }
        let _held = Held(&self.in_hashing);
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| ApiError::Unavailable)?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// Take a chat socket place for a client at `ip` (`None`: unknown, not limited).
    pub fn chat_socket(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<SocketSlot, ApiError> {
        let key = ip
            .filter(|ip| !self.limits.exempt.iter().any(|c| c.contains(*ip)))
            .map(http_common::client_key);
        if let Some(key) = key {
            let mut map = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(key).or_default();
            if *n >= self.limits.chat_sockets_per_ip {
                drop(map);
                self.refused("chat_sockets_per_ip");
                return Err(ApiError::RateLimited {
                    message: "too many chat connections from this address",
                    retry_after: 10,
                });
            }
            *n += 1;
        }
        Ok(SocketSlot {
            guards: self.clone(),
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_hashing_queue_answers_busy_at_once_and_frees_on_completion() {
        let guards = Arc::new(Guards::new(
            Limits {
                password_hash_concurrency: 1,
                password_hash_queue: 1,
                ..Limits::default()
            },
            None,
        ));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let mut running = Vec::new();
        for _ in 0..2 {
            let g = guards.clone();
            let rx = release_rx.clone();
            running.push(tokio::spawn(async move {
                g.hash(move || {
                    let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
                })
                .await
            }));
        }
        // Wait (bounded) until both are inside: one hashing, one queued.
        for _ in 0..200 {
            if guards.in_hashing.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let third = guards.hash(|| ()).await;
        assert!(matches!(third, Err(ApiError::Busy(_))), "{third:?}");
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        for r in running {
            assert!(r.await.unwrap().is_ok());
        }
        assert!(guards.hash(|| ()).await.is_ok(), "room again");
    }

    #[test]
    fn chat_sockets_are_capped_per_address_and_released_on_drop() {
        let guards = Arc::new(Guards::new(
            Limits {
                chat_sockets_per_ip: 2,
                exempt: vec![],
                ..Limits::default()
            },
            None,
        ));
        let a: IpAddr = "198.51.100.4".parse().unwrap();
        let s1 = guards.chat_socket(Some(a)).unwrap();
        let _s2 = guards.chat_socket(Some(a)).unwrap();
        assert!(guards.chat_socket(Some(a)).is_err());
        assert!(guards
            .chat_socket(Some("198.51.100.5".parse().unwrap()))
            .is_ok());
        drop(s1);
        assert!(guards.chat_socket(Some(a)).is_ok());
    }
}
