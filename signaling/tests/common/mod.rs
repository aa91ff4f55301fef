//! A fake media engine for the HTTP tests: no ports, no media.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use cluster::TokenKey;
use sfu::{
    IceRestarted, PeerId, Pin, Published, Sections, SfuError, SfuStats, Shown, StreamId,
    SubscribeOptions, Subscribed,
};
use signaling::{router, AppState, Cluster, HttpSettings, Metrics, Sessions, SfuControl, Store};

/// Answers every call with a canned result and records what it was asked.
#[derive(Clone, Default)]
pub struct FakeSfu {
    pub subscribe_error: Arc<Mutex<Option<SfuError>>>,
    pub closed: Arc<Mutex<Vec<PeerId>>>,
    pub pins: Arc<Mutex<Vec<Pin>>>,
    pub restarts: Arc<Mutex<Vec<String>>>,
    /// The stream of every publish, in order; publish `n` (from 0) answers as peer `100 + n`.
    pub published: Arc<Mutex<Vec<StreamId>>>,
    /// The streams of every subscribe: the first, then `options.also`. Subscribe `n` (from
    /// 0) answers as peer `8 + 1000 n`.
    pub subscribed: Arc<Mutex<Vec<Vec<StreamId>>>>,
    /// Every bind: the viewing session and the stream shown on it.
    pub bound: Arc<Mutex<Vec<(PeerId, StreamId)>>>,
}

impl SfuControl for FakeSfu {
    async fn publish(&self, stream: StreamId, _offer: String) -> Result<Published, SfuError> {
        let mut published = self.published.lock().unwrap();
        published.push(stream);
        Ok(Published {
            peer: PeerId(99 + published.len() as u64),
            answer: "v=0\r\n".into(),
            replaced: None,
        })
    }
    async fn subscribe(
        &self,
        stream: StreamId,
        _offer: String,
        options: SubscribeOptions,
    ) -> Result<Subscribed, SfuError> {
        self.pins.lock().unwrap().push(options.layer);
        let mut watched = vec![stream];
        watched.extend(options.also);
        let n = {
            let mut subscribed = self.subscribed.lock().unwrap();
            subscribed.push(watched);
            subscribed.len() as u64 - 1
        };
        match self.subscribe_error.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(Subscribed {
                peer: PeerId(8 + 1000 * n),
                answer: "v=0\r\n".into(),
            }),
        }
    }
    async fn bind(
        &self,
        peer: PeerId,
        stream: StreamId,
        _sections: Sections,
    ) -> Result<bool, SfuError> {
        self.bound.lock().unwrap().push((peer, stream));
        Ok(true)
    }
    async fn unbind(&self, _peer: PeerId, _stream: StreamId) -> Result<bool, SfuError> {
        Ok(false)
    }
    async fn shown(&self, peer: PeerId) -> Result<Vec<Shown>, SfuError> {
        // Subscribe `n` is peer `8 + 1000 n`; its streams go on section pairs (2i, 2i+1).
        let n = peer
            .0
            .checked_sub(8)
            .filter(|d| d % 1000 == 0)
            .map(|d| d / 1000);
        let subscribed = self.subscribed.lock().unwrap();
        let streams = n
            .and_then(|n| subscribed.get(n as usize))
            .ok_or(SfuError::UnknownPeer)?;
        let mut shown = Vec::new();
        for (i, s) in streams.iter().enumerate() {
            shown.push(Shown {
                stream: s.clone(),
                video: Some((2 * i).to_string()),
                audio: Some((2 * i + 1).to_string()),
            });
        }
        Ok(shown)
    }
    async fn set_layer(&self, _peer: PeerId, pin: Pin) -> Result<(), SfuError> {
        self.pins.lock().unwrap().push(pin);
        Ok(())
    }
    async fn restart_ice(
        &self,
        _peer: PeerId,
        ufrag: String,
        _pwd: String,
        _candidates: Vec<String>,
    ) -> Result<IceRestarted, SfuError> {
        self.restarts.lock().unwrap().push(ufrag);
        Ok(IceRestarted {
            ufrag: "srvufrag".into(),
            pwd: "srvpassword".into(),
            candidates: vec!["a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".into()],
        })
    }
    async fn trickle(&self, _peer: PeerId, candidates: Vec<String>) -> Result<usize, SfuError> {
        Ok(candidates.len())
    }
    async fn close(&self, peer: PeerId) -> Result<(), SfuError> {
        self.closed.lock().unwrap().push(peer);
        Ok(())
    }
    async fn stats(&self) -> Result<SfuStats, SfuError> {
        Ok(SfuStats::default())
    }
    async fn is_live(&self, _stream: StreamId) -> Result<bool, SfuError> {
        Ok(true)
    }
}

pub async fn app(fake: FakeSfu) -> (axum::Router, Arc<Sessions>) {
    app_with(
        fake,
        Cluster::new("origin".into(), String::new(), TokenKey::new(SECRET)),
    )
    .await
}

/// The cluster secret of these tests.
pub const SECRET: &[u8] = b"test-cluster-secret-0123456789";

/// The router over `fake`, a store with the channels `demo` and `secret` (private), and these
/// cluster settings.
pub async fn app_with(fake: FakeSfu, cluster: Cluster) -> (axum::Router, Arc<Sessions>) {
    let store = Store::open("sqlite::memory:").await.unwrap();
    store.create_channel("demo").await.unwrap();
    store.create_channel("secret").await.unwrap();
    store.set_private("secret", true).await.unwrap();
    let sessions = Arc::new(Sessions::default());
    let state = AppState {
        sfu: fake,
        store,
        sessions: sessions.clone(),
        settings: Arc::new(HttpSettings::default()),
        metrics: Arc::new(Metrics::new()),
        upstream: None,
        cluster: Arc::new(cluster),
        admission: Arc::default(),
        stages: Arc::default(),
    };
    (router(state), sessions)
}

/// The smallest offer WHEP takes before asking the (fake) engine: one media section.
pub const OFFER: &str = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n";
