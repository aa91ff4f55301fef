//! The HTTP/1.1 server loop: hyper with a timer, so a client that never finishes its headers
//! (or idles on a keep-alive connection) is cut off after `http.header_read_timeout_ms`; a cap
//! on open connections node-wide and per client address (excess connections are closed at
//! accept, counted in `aethex_refused_total{reason="http_connections"}`); header size bounded;
//! graceful shutdown that lets in-flight requests finish (bounded).
//!
//! HTTP/2 is not offered: browsers speak it only over TLS, which a reverse proxy terminates,
//! and version sniffing would read before the header timer starts.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use cluster::Cidr;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Largest request head (start line + headers) accepted; larger ones get 431.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// After shutdown, in-flight requests get this long to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Connection limits.
#[derive(Debug, Clone)]
pub(crate) struct ServerLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Addresses the per-address cap does not apply to (trusted proxies, `limits.exempt`).
    pub exempt: Vec<Cidr>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Counts of open connections; a [`Slot`] is one of them.
#[derive(Default)]
struct Counts(Mutex<Open>);

struct Slot {
    counts: Arc<Counts>,
    ip: Option<IpAddr>,
}

impl Counts {
    fn enter(self: &Arc<Self>, ip: IpAddr, limits: &ServerLimits) -> Option<Slot> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= limits.max_connections {
            return None;
        }
        let counted = (!limits.exempt.iter().any(|c| c.contains(ip)))
            .then(|| signaling::limits::client_key(ip));
        if let Some(key) = counted {
            let n = open.per_ip.entry(key).or_default();
            if *n >= limits.max_connections_per_ip {
                return None;
            }
            *n += 1;
        }
        open.total += 1;
        Some(Slot {
            counts: self.clone(),
            ip: counted,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(ip) = self.ip {
            if let Some(n) = open.per_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.per_ip.remove(&ip);
                }
            }
        }
    }
}

/// Serve `app` on `listener` until `shutdown` resolves, then let in-flight requests finish.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    metrics: Arc<signaling::Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let counts = Arc::new(Counts::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Reap finished connection tasks so the set stays small.
        while conns.try_join_next().is_some() {}
        let Some(slot) = counts.enter(peer.ip(), &limits) else {
            metrics.refused("http_connections");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = app
            .clone()
            .map_request(move |mut req: axum::extract::Request<_>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(MAX_HEADER_BYTES)
            .keep_alive(true);
        let mut stop = stop_rx.clone();
        conns.spawn(async move {
            let _slot = slot;
            let conn = builder
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let finished = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, finished)
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the shutdown grace; closing them");
        conns.abort_all();
    }
    Ok(())
}

/// The limits from the configuration.
pub(crate) fn limits(config: &crate::Config) -> Result<ServerLimits, crate::config::ConfigError> {
    let signaling = config.signaling_limits()?;
    let mut exempt = signaling.exempt;
    exempt.extend(signaling.trusted_proxies);
    Ok(ServerLimits {
        header_read_timeout: Duration::from_millis(config.http.header_read_timeout_ms),
        max_connections: config.http.max_connections,
        max_connections_per_ip: config.http.max_connections_per_ip,
        exempt,
    })
}

/// Bind `http.metrics_listen`, when set.
pub(crate) async fn bind_metrics(config: &crate::Config) -> std::io::Result<Option<TcpListener>> {
    if config.http.metrics_listen.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = config
        .http
        .metrics_listen
        .parse()
        .map_err(|_| std::io::Error::other("http.metrics_listen must be IP:PORT"))?;
    Ok(Some(TcpListener::bind(addr).await?))
}
