//! Prometheus exposition of the SFU's counters (scraped at `/metrics`).

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use sfu::{DropReason, SfuStats};

/// The registry and its series. Values are copied from an [`SfuStats`] snapshot at scrape time.
pub struct Metrics {
    registry: Registry,
    publishers: IntGauge,
    subscribers: IntGauge,
    packets_in: IntCounter,
    bytes_in: IntCounter,
    packets_out: IntCounter,
    bytes_out: IntCounter,
    packets_forwarded: IntCounter,
    drops: IntCounterVec,
    keyframe_requests: IntCounterVec,
    peer_failures: IntCounter,
    cache_starts: IntCounter,
    disconnects: IntCounter,
    layer_switches: IntCounter,
    ice_restarts: IntCounter,
    relay_packets: IntCounter,
    channel_viewers: prometheus::IntGaugeVec,
    channel_relays: prometheus::IntGaugeVec,
    refused: IntCounterVec,
    scrape: std::sync::Mutex<()>,
}

fn gauge_vec(registry: &Registry, name: &str, help: &str) -> prometheus::IntGaugeVec {
    let g = prometheus::IntGaugeVec::new(Opts::new(name, help), &["channel"]).expect("metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric name");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

impl Metrics {
    /// Register every series.
    pub fn new() -> Self {
        let registry = Registry::new();
        let publishers =
            IntGauge::new("aethex_publishers", "Publishing sessions (WHIP)").expect("metric");
        let subscribers =
            IntGauge::new("aethex_subscribers", "Viewing sessions (WHEP)").expect("metric");
        registry
            .register(Box::new(publishers.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(subscribers.clone()))
            .expect("unique metric");
        let drops = IntCounterVec::new(
            Opts::new(
                "aethex_drops_total",
                "Datagrams or samples dropped, by reason",
            ),
            &["reason"],
        )
        .expect("metric");
        registry
            .register(Box::new(drops.clone()))
            .expect("unique metric");
        let keyframe_requests = IntCounterVec::new(
            Opts::new(
                "aethex_keyframe_requests_total",
                "Keyframe requests: from viewers and the SFU (in), to publishers after coalescing (sent)",
            ),
            &["direction"],
        )
        .expect("metric");
        registry
            .register(Box::new(keyframe_requests.clone()))
            .expect("unique metric");
        let refused = IntCounterVec::new(
            Opts::new(
                "aethex_refused_total",
                "Requests, sessions and connections refused by a limit, by reason",
            ),
            &["reason"],
        )
        .expect("metric");
        registry
            .register(Box::new(refused.clone()))
            .expect("unique metric");
        Self {
            refused,
            packets_in: counter(
                &registry,
                "aethex_packets_in_total",
                "Datagrams received on the media port",
            ),
            bytes_in: counter(
                &registry,
                "aethex_bytes_in_total",
                "Bytes received on the media port",
            ),
            packets_out: counter(
                &registry,
                "aethex_packets_out_total",
                "Datagrams sent from the media port",
            ),
            bytes_out: counter(
                &registry,
                "aethex_bytes_out_total",
                "Bytes sent from the media port",
            ),
            packets_forwarded: counter(
                &registry,
                "aethex_packets_forwarded_total",
                "RTP packets forwarded to viewers",
            ),
            peer_failures: counter(
                &registry,
                "aethex_peer_failures_total",
                "Sessions closed because their engine failed",
            ),
            cache_starts: counter(
                &registry,
                "aethex_cache_starts_total",
                "Viewers started from the keyframe cache, without waiting for a publisher keyframe",
            ),
            disconnects: counter(
                &registry,
                "aethex_peer_disconnects_total",
                "Sessions closed because the peer went silent (consent freshness) or ICE/DTLS dropped",
            ),
            layer_switches: counter(
                &registry,
                "aethex_layer_switches_total",
                "Viewers moved between simulcast layers (on the target layer's keyframe)",
            ),
            ice_restarts: counter(
                &registry,
                "aethex_ice_restarts_total",
                "Sessions whose ICE was restarted through a WHIP/WHEP PATCH",
            ),
            relay_packets: counter(
                &registry,
                "aethex_relay_packets_total",
                "RTP packets sent to downstream relays (edges): one copy per edge and stream",
            ),
            channel_viewers: gauge_vec(
                &registry,
                "aethex_channel_viewers",
                "Viewers of a channel on this node (WHEP sessions)",
            ),
            channel_relays: gauge_vec(
                &registry,
                "aethex_channel_relays",
                "Edges this node feeds a channel to (one relay copy each)",
            ),
            registry,
            publishers,
            subscribers,
            drops,
            keyframe_requests,
            scrape: std::sync::Mutex::new(()),
        }
    }

    /// Count a refusal by a limit (`reason`: a fixed label such as `offer_rate`).
    pub fn refused(&self, reason: &'static str) {
        self.refused.with_label_values(&[reason]).inc();
    }

    /// How many refusals of `reason` so far.
    pub fn refused_count(&self, reason: &'static str) -> u64 {
        self.refused.with_label_values(&[reason]).get()
    }

    /// Render the Prometheus text format for this snapshot. Channels in `private` get no
    /// series of their own (their names and audiences are not public).
    pub fn render(&self, s: &SfuStats, private: &std::collections::HashSet<String>) -> String {
        let _guard = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.publishers.set(s.publishers as i64);
        self.subscribers.set(s.subscribers as i64);
        set(&self.packets_in, s.packets_in);
        set(&self.bytes_in, s.bytes_in);
        set(&self.packets_out, s.packets_out);
        set(&self.bytes_out, s.bytes_out);
        set(&self.packets_forwarded, s.packets_forwarded);
        set(&self.peer_failures, s.peer_failures);
        set(&self.cache_starts, s.cache_starts);
        set(&self.disconnects, s.disconnects);
        set(&self.layer_switches, s.layer_switches);
        set(&self.ice_restarts, s.ice_restarts);
        set(&self.relay_packets, s.relay_packets);
        for reason in DropReason::ALL {
            set(
                &self.drops.with_label_values(&[reason.label()]),
                s.drops_for(reason),
            );
        }
        set(
            &self.keyframe_requests.with_label_values(&["in"]),
            s.keyframe_requests_in,
        );
        set(
            &self.keyframe_requests.with_label_values(&["sent"]),
            s.keyframe_requests_sent,
        );
        // Channels come and go: only those the SFU knows now are exported.
        self.channel_viewers.reset();
        self.channel_relays.reset();
        for st in s.streams.iter().filter(|st| !private.contains(&st.name)) {
            self.channel_viewers
                .with_label_values(&[st.name.as_str()])
                .set(st.viewers as i64);
            self.channel_relays
                .with_label_values(&[st.name.as_str()])
                .set(st.relays as i64);
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The platform API counts its refusals into the same `aethex_refused_total{reason}`.
impl http_common::Refusals for Metrics {
    fn refused(&self, reason: &'static str) {
        Metrics::refused(self, reason);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counters only go up in this API; the snapshot is authoritative, so move to its value.
fn set(c: &IntCounter, value: u64) {
    let current = c.get();
    if value >= current {
        c.inc_by(value - current);
    } else {
        c.reset();
        c.inc_by(value);
    }
}
