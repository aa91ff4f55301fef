//! The relay's Prometheus series, appended to a node's `/metrics`.
//!
//! Transport figures (RTT, lost QUIC packets, bytes) come from quinn's own connection
//! statistics, sampled every 250 ms, so they describe the relay path itself; viewers per edge come
//! from the edges' `load` reports.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Relay series of one node (as upstream for its edges, and as edge of its upstream).
pub struct RelayMetrics {
    registry: Registry,
    edges: IntGauge,
    edge_rtt: GaugeVec,
    edge_lost: IntCounterVec,
    edge_sent: IntCounterVec,
    edge_viewers: IntGaugeVec,
    upstream_connected: IntGauge,
    upstream_rtt: Gauge,
    upstream_lost: IntCounter,
    upstream_received: IntCounter,
    dropped: IntCounter,
    resent: IntCounter,
    overflow: IntCounter,
    large: IntCounter,
    large_dropped: IntCounter,
    nacked: IntCounter,
    repaired: IntCounter,
    unrepaired: IntCounter,
    late: IntCounter,
    /// Last quinn totals seen per connection (edge node id, or "" for the upstream), to turn
    /// them into counter increments.
    last: Mutex<HashMap<String, (u64, u64)>>,
}

/// What quinn says about a connection now.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathSample {
    /// Smoothed RTT in seconds.
    pub rtt: f64,
    /// QUIC packets declared lost since the connection started.
    pub lost: u64,
    /// UDP payload bytes sent (upstream) or received (edge) since the connection started.
    pub bytes: u64,
}

impl PathSample {
    /// Sample a quinn connection; `sent`: count bytes sent (upstream side), else received.
    pub fn of(conn: &quinn::Connection, sent: bool) -> Self {
        let s = conn.stats();
        Self {
            rtt: conn.rtt().as_secs_f64(),
            lost: s.path.lost_packets,
            bytes: if sent { s.udp_tx.bytes } else { s.udp_rx.bytes },
        }
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

impl Default for RelayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RelayMetrics {
    /// Register every series.
    pub fn new() -> Self {
        let r = Registry::new();
        let edge = |name: &str, help: &str| Opts::new(name, help);
        Self {
            edges: register(
                &r,
                IntGauge::new("aethex_relay_edges", "Edges connected to this node").expect("m"),
            ),
            edge_rtt: register(
                &r,
                GaugeVec::new(
                    edge(
                        "aethex_relay_edge_rtt_seconds",
                        "QUIC RTT to each connected edge",
                    ),
                    &["edge"],
                )
                .expect("m"),
            ),
            edge_lost: register(
                &r,
                IntCounterVec::new(
                    edge(
                        "aethex_relay_edge_lost_packets_total",
                        "QUIC packets lost towards each edge",
                    ),
                    &["edge"],
                )
                .expect("m"),
            ),
            edge_sent: register(
                &r,
                IntCounterVec::new(
                    edge(
                        "aethex_relay_edge_sent_bytes_total",
                        "Bytes sent to each edge (origin egress per edge; rate() is its bitrate)",
                    ),
                    &["edge"],
                )
                .expect("m"),
            ),
            edge_viewers: register(
                &r,
                IntGaugeVec::new(
                    edge(
                        "aethex_relay_edge_viewers",
                        "Viewers each edge reports (its load), by region",
                    ),
                    &["edge", "region"],
                )
                .expect("m"),
            ),
            upstream_connected: register(
                &r,
                IntGauge::new(
                    "aethex_relay_upstream_connected",
                    "1 while this edge is connected to its upstream",
                )
                .expect("m"),
            ),
            upstream_rtt: register(
                &r,
                Gauge::new(
                    "aethex_relay_upstream_rtt_seconds",
                    "QUIC RTT to the upstream",
                )
                .expect("m"),
            ),
            upstream_lost: register(
                &r,
                IntCounter::new(
                    "aethex_relay_upstream_lost_packets_total",
                    "QUIC packets lost towards the upstream",
                )
                .expect("m"),
            ),
            upstream_received: register(
                &r,
                IntCounter::new(
                    "aethex_relay_upstream_received_bytes_total",
                    "Bytes received from the upstream (rate() is the relay's downstream bitrate)",
                )
                .expect("m"),
            ),
            dropped: register(
                &r,
                IntCounter::new(
                    "aethex_relay_dropped_datagrams_total",
                    "Relay datagrams dropped: malformed, unknown track, or the SFU queue full",
                )
                .expect("m"),
            ),
            resent: register(
                &r,
                IntCounter::new(
                    "aethex_relay_resent_packets_total",
                    "Packets resent to edges from the 2 s relay cache, on their NACK",
                )
                .expect("m"),
            ),
            overflow: register(
                &r,
                IntCounter::new(
                    "aethex_relay_send_overflow_total",
                    "Relay datagrams sent into a full QUIC send queue, which makes room by \
                     discarding its oldest (the path or the edge cannot keep up)",
                )
                .expect("m"),
            ),
            large: register(
                &r,
                IntCounter::new(
                    "aethex_relay_large_datagrams_total",
                    "Relay datagrams larger than the path's QUIC datagram size, sent on a stream \
                     of their own instead",
                )
                .expect("m"),
            ),
            large_dropped: register(
                &r,
                IntCounter::new(
                    "aethex_relay_large_dropped_total",
                    "Relay datagrams too large for the path and dropped: the edge reads no \
                     streams (an older edge), or too many were on their way",
                )
                .expect("m"),
            ),
            nacked: register(
                &r,
                IntCounter::new(
                    "aethex_relay_nacked_packets_total",
                    "Sequence numbers this edge NACKed upstream (each try counts)",
                )
                .expect("m"),
            ),
            repaired: register(
                &r,
                IntCounter::new(
                    "aethex_relay_repaired_packets_total",
                    "Packets lost on the relay that arrived after a NACK",
                )
                .expect("m"),
            ),
            unrepaired: register(
                &r,
                IntCounter::new(
                    "aethex_relay_unrepaired_packets_total",
                    "Packets lost on the relay and never repaired (3 NACKs, or older than 2 s)",
                )
                .expect("m"),
            ),
            late: register(
                &r,
                IntCounter::new(
                    "aethex_relay_late_dropped_total",
                    "Relay packets dropped at this edge for arriving over 500 ms behind their media clock (a stalled path's backlog)",
                )
                .expect("m"),
            ),
            registry: r,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// The Prometheus text of these series.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Increments since the last sample of connection `key` (quinn's totals restart with
    /// each connection).
    fn deltas(&self, key: &str, s: PathSample) -> (u64, u64) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let (lost, bytes) = last.get(key).copied().unwrap_or((0, 0));
        last.insert(key.to_string(), (s.lost, s.bytes));
        (s.lost.saturating_sub(lost), s.bytes.saturating_sub(bytes))
    }

    /// An edge connected (upstream side).
    pub fn edge_connected(&self) {
        self.edges.inc();
    }

    /// A sample of the connection to edge `edge` (upstream side).
    pub fn edge_sample(&self, edge: &str, s: PathSample) {
        let (lost, bytes) = self.deltas(edge, s);
        self.edge_rtt.with_label_values(&[edge]).set(s.rtt);
        self.edge_lost.with_label_values(&[edge]).inc_by(lost);
        self.edge_sent.with_label_values(&[edge]).inc_by(bytes);
    }

    /// An edge's load report (upstream side).
    pub fn edge_load(&self, edge: &str, region: &str, viewers: u32) {
        self.edge_viewers
            .with_label_values(&[edge, region])
            .set(i64::from(viewers));
    }

    /// An edge disconnected: its gauges go (its counters stay, as counters do).
    pub fn edge_gone(&self, edge: &str, region: &str) {
        self.edges.dec();
        let _ = self.edge_rtt.remove_label_values(&[edge]);
        let _ = self.edge_viewers.remove_label_values(&[edge, region]);
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(edge);
    }

    /// Connected to the upstream, or not (edge side).
    pub fn upstream_up(&self, up: bool) {
        self.upstream_connected.set(i64::from(up));
        if !up {
            self.last
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove("");
        }
    }

    /// A sample of the connection to the upstream (edge side).
    pub fn upstream_sample(&self, s: PathSample) {
        let (lost, bytes) = self.deltas("", s);
        self.upstream_rtt.set(s.rtt);
        self.upstream_lost.inc_by(lost);
        self.upstream_received.inc_by(bytes);
    }

    /// Packets resent on NACK (upstream side).
    pub fn resent(&self, n: u64) {
        self.resent.inc_by(n);
    }

    /// Datagrams sent into a full send queue (upstream side).
    pub fn overflow(&self, n: u64) {
        self.overflow.inc_by(n);
    }

    /// Datagrams too large for the path, sent on streams (upstream side).
    pub fn large(&self, n: u64) {
        self.large.inc_by(n);
    }

    /// Datagrams too large for the path and dropped (upstream side).
    pub fn large_dropped(&self, n: u64) {
        self.large_dropped.inc_by(n);
    }

    /// Repair counters of the edge's gap tracker: increments since the last call.
    pub fn repair(&self, nacked: u64, repaired: u64, unrepaired: u64) {
        self.nacked.inc_by(nacked);
        self.repaired.inc_by(repaired);
        self.unrepaired.inc_by(unrepaired);
    }

    /// Relay datagrams dropped.
    pub fn dropped(&self, n: u64) {
        self.dropped.inc_by(n);
    }

    /// Relay packets dropped as late.
    pub fn late(&self, n: u64) {
        self.late.inc_by(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quinn_totals_become_counter_increments_per_connection() {
        let m = RelayMetrics::new();
        m.edge_connected();
        let sample = |lost, bytes| PathSample {
            rtt: 0.002,
            lost,
            bytes,
        };
        m.edge_sample("eu-1", sample(1, 1000));
        m.edge_sample("eu-1", sample(3, 5000));
        let text = m.render();
        assert!(
            text.contains("aethex_relay_edge_sent_bytes_total{edge=\"eu-1\"} 5000"),
            "{text}"
        );
        assert!(
            text.contains("aethex_relay_edge_lost_packets_total{edge=\"eu-1\"} 3"),
            "{text}"
        );
        // A new connection of the same edge starts from zero again, and the counter goes on.
        m.edge_gone("eu-1", "eu");
        m.edge_sample("eu-1", sample(0, 700));
        let text = m.render();
        assert!(
            text.contains("aethex_relay_edge_sent_bytes_total{edge=\"eu-1\"} 5700"),
            "{text}"
        );
        assert!(text.contains("aethex_relay_edges 0"), "{text}");
    }
}
