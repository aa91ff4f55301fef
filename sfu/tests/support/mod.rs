//! The in-memory world shared by the scenario tests and the fan-out benchmark: real str0m
//! client peers and the sans-IO SFU exchanging datagrams in virtual time. No sockets, no wall
//! clock (the virtual epoch is read once).
#![allow(clippy::disallowed_methods, dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sfu::{Input, Output, PeerId, Sfu, SfuConfig, StreamId, SubscribeOptions};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::format::CodecExtra;
use str0m::media::{Direction, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Rtc, RtcConfig};

/// Decides whether a datagram (from, bytes) on its way to the SFU survives.
pub type LossFilter = Box<dyn FnMut(SocketAddr, &[u8]) -> bool>;

pub const SFU_ADDR: &str = "127.0.0.1:5000";

pub fn sfu_addr() -> SocketAddr {
    SFU_ADDR.parse().unwrap()
}

/// One received frame: its payload and its first and last sequence numbers.
pub type Received = (Vec<u8>, (u64, u64));

/// A str0m peer playing a WHIP publisher or WHEP viewer.
pub struct Client {
    pub addr: SocketAddr,
    pub rtc: Rtc,
    pub deadline: Instant,
    pub connected: bool,
    pub video: Option<Mid>,
    pub audio: Option<Mid>,
    /// Received video frames: (payload, keyframe).
    pub video_in: Vec<(Vec<u8>, bool)>,
    pub audio_in: Vec<Vec<u8>>,
    /// The audio level extension of each received audio frame (RFC 6464), as parsed under this
    /// client's own extension ids.
    pub audio_levels: Vec<Option<i8>>,
    /// Sequence numbers (first, last) of each received video frame.
    pub video_seq: Vec<(u64, u64)>,
    /// The payload type each video frame arrived with (this client's own number).
    pub video_pts: Vec<u8>,
    /// RTP time (90 kHz, extended) of each received video frame.
    pub video_time: Vec<u64>,
    pub keyframe_requests: usize,
    /// The rid of each keyframe request received (simulcast publishers).
    pub keyframe_rids: Vec<Option<Rid>>,
    /// VP8 extended picture id of each received video frame.
    pub video_pic: Vec<Option<u64>>,
    pub peer: Option<PeerId>,
    /// The SDP answer the SFU gave this client.
    pub answer: String,
    /// Every received frame by the section it came on: (payload, first and last sequence
    /// number). Filled for all sections, so a stage viewer's sections can be told apart.
    pub by_mid: HashMap<Mid, Vec<Received>>,
    /// A stage viewer's sections, in offer order.
    pub video_mids: Vec<Mid>,
    pub audio_mids: Vec<Mid>,
}

impl Client {
    pub fn new(now: Instant, addr: &str) -> Self {
        Self::with_red(now, addr, false)
    }

    /// A client whose Opus may be wrapped in RFC 2198 RED (negotiated when `red`).
    pub fn with_red(now: Instant, addr: &str, red: bool) -> Self {
        let mut builder = Rtc::builder();
        builder.codec_config().enable_opus(true, red);
        Self::with_config(now, addr, builder)
    }

    /// A client with its own engine configuration (payload types, header-extension ids): an
    /// implementation that numbers things differently from the SFU's other peers.
    pub fn with_config(now: Instant, addr: &str, config: RtcConfig) -> Self {
        let addr: SocketAddr = addr.parse().unwrap();
        let mut rtc = config.build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Self {
            addr,
            rtc,
            deadline: now,
            connected: false,
            video: None,
            audio: None,
            video_in: Vec::new(),
            audio_in: Vec::new(),
            audio_levels: Vec::new(),
            video_seq: Vec::new(),
            video_time: Vec::new(),
            video_pts: Vec::new(),
            keyframe_requests: 0,
            keyframe_rids: Vec::new(),
            video_pic: Vec::new(),
            peer: None,
            answer: String::new(),
            by_mid: HashMap::new(),
            video_mids: Vec::new(),
            audio_mids: Vec::new(),
        }
    }

    /// A publisher offer whose video is simulcast with these rids (and audio).
    pub fn offer_simulcast(&mut self, rids: &[&str]) -> (String, SdpPendingOffer) {
        let mut sim = Simulcast::new();
        for r in rids {
            sim.add_send_layer(SimulcastLayer::new(r));
        }
        let mut api = self.rtc.sdp_api();
        let v = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, Some(sim));
        let a = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        self.video = Some(v);
        self.audio = Some(a);
        let (offer, pending) = api.apply().unwrap();
        (offer.to_sdp_string(), pending)
    }

    /// Write one VP8 frame on simulcast layer `rid`.
    pub fn write_layer(&mut self, now: Instant, rid: &str, ticks: u64, data: Vec<u8>) {
        self.write_with(now, MediaKind::Video, ticks, data, |w| {
            w.rid(Rid::from(rid))
        });
    }

    pub fn offer(&mut self, dir: Direction) -> (String, SdpPendingOffer) {
        let mut api = self.rtc.sdp_api();
        let v = api.add_media(MediaKind::Video, dir, None, None, None);
        let a = api.add_media(MediaKind::Audio, dir, None, None, None);
        self.video = Some(v);
        self.audio = Some(a);
        let (offer, pending) = api.apply().unwrap();
        (offer.to_sdp_string(), pending)
    }

    /// A viewer offer with `n` video and `n` audio sections (video 0, audio 0, video 1, ...),
    /// as a stage viewer sends; the first pair is also `video` and `audio`.
    pub fn offer_sections(&mut self, n: usize) -> (String, SdpPendingOffer) {
        let mut api = self.rtc.sdp_api();
        for _ in 0..n {
            let v = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
            let a = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
            self.video_mids.push(v);
            self.audio_mids.push(a);
        }
        self.video = self.video_mids.first().copied();
        self.audio = self.audio_mids.first().copied();
        let (offer, pending) = api.apply().unwrap();
        (offer.to_sdp_string(), pending)
    }

    /// Frames received on `mid`.
    pub fn frames_on(&self, mid: Mid) -> &[Received] {
        self.by_mid.get(&mid).map_or(&[], Vec::as_slice)
    }

    pub fn accept(&mut self, pending: SdpPendingOffer, answer: &str) {
        let answer = SdpAnswer::from_sdp_string(answer)
            .unwrap_or_else(|e| panic!("the SFU's answer does not parse: {e}\n{answer}"));
        self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
    }

    /// An Opus packet with the RFC 6464 audio level `dbov` (0 loudest, 127 silence).
    pub fn write_audio_level(&mut self, now: Instant, ticks: u64, data: Vec<u8>, dbov: u8) {
        let level = -(dbov.min(127) as i8);
        self.write_with(now, MediaKind::Audio, ticks, data, |w| {
            w.audio_level(level, true)
        });
    }

    pub fn write(&mut self, now: Instant, kind: MediaKind, ticks: u64, data: Vec<u8>) {
        self.write_with(now, kind, ticks, data, |w| w);
    }

    /// Write one VP8 frame or Opus packet, its writer first set up by `dress`.
    fn write_with(
        &mut self,
        now: Instant,
        kind: MediaKind,
        ticks: u64,
        data: Vec<u8>,
        dress: impl for<'w> FnOnce(str0m::media::Writer<'w>) -> str0m::media::Writer<'w>,
    ) {
        let (mid, codec, rate) = match kind {
            MediaKind::Video => (self.video.unwrap(), Codec::Vp8, 90_000),
            MediaKind::Audio => (self.audio.unwrap(), Codec::Opus, 48_000),
        };
        let writer = self.rtc.writer(mid).unwrap();
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .unwrap()
            .pt();
        let time = MediaTime::new(ticks, str0m::media::Frequency::new(rate).unwrap());
        dress(writer).write(pt, now, time, data).unwrap();
    }
}

/// A client's downlink (SFU to client): a bottleneck of `rate_bps` with a tail-drop queue of at
/// most `max_queue`, a one-way `delay`, and seeded random loss.
pub struct Link {
    pub rate_bps: u64,
    pub delay: Duration,
    pub max_queue: Duration,
    /// Probability (0..1) that a datagram is lost.
    pub loss: f64,
    rng: u64,
    free_at: Option<Instant>,
    in_flight: VecDeque<(Instant, Vec<u8>)>,
    pub sent: u64,
    pub dropped: u64,
}

impl Link {
    pub fn new(rate_bps: u64, delay: Duration) -> Self {
        Self {
            rate_bps,
            delay,
            max_queue: Duration::from_millis(150),
            loss: 0.0,
            rng: 0x9E37_79B9_7F4A_7C15,
            free_at: None,
            in_flight: VecDeque::new(),
            sent: 0,
            dropped: 0,
        }
    }

    /// A link with no bottleneck, only `loss` (seeded by `seed`).
    pub fn lossy(loss: f64, seed: u64) -> Self {
        let mut l = Self::new(1_000_000_000, Duration::from_millis(10));
        l.loss = loss;
        l.rng = seed | 1;
        l
    }

    fn random(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    fn push(&mut self, now: Instant, data: Vec<u8>) {
        self.sent += 1;
        if self.loss > 0.0 && self.random() < self.loss {
            self.dropped += 1;
            return;
        }
        let start = self.free_at.map_or(now, |f| f.max(now));
        if start.saturating_duration_since(now) > self.max_queue {
            self.dropped += 1;
            return;
        }
        let bits = (data.len() as u64 + 28) * 8;
        let done = start + Duration::from_nanos(bits * 1_000_000_000 / self.rate_bps.max(1));
        self.free_at = Some(done);
        self.in_flight.push_back((done + self.delay, data));
    }

    fn next_due(&self) -> Option<Instant> {
        self.in_flight.front().map(|(t, _)| *t)
    }
}

/// The in-memory network: clients, the SFU, virtual time.
pub struct World {
    pub now: Instant,
    pub sfu: Sfu,
    pub clients: Vec<Client>,
    pub to_sfu: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Loss on the way to the SFU: return false to drop a datagram (from, bytes).
    pub keep_to_sfu: Option<LossFilter>,
    /// Client index by address, so delivery stays O(1) with thousands of clients.
    pub index: HashMap<SocketAddr, usize>,
    /// Shaped downlinks by client address (others deliver at once).
    pub links: HashMap<SocketAddr, Link>,
    /// Packets the SFU emitted for downstream relays, and its events, oldest first.
    pub relay_out: Vec<sfu::RelayPacket>,
    pub events: Vec<sfu::SfuEvent>,
}

impl World {
    pub fn new() -> Self {
        Self::with_max_peers(100)
    }

    pub fn with_max_peers(max_peers: usize) -> Self {
        let now = Instant::now();
        let config = SfuConfig {
            candidates: vec![sfu_addr()],
            tcp_candidates: vec![],
            keyframe_request_interval: Duration::from_millis(300),
            max_peers,
            connect_timeout: Duration::from_secs(10),
            offline_grace: Duration::from_secs(5),
            tcp_per_ip: 20,
            tcp_first_frame: Duration::from_secs(5),
        };
        Self {
            now,
            sfu: Sfu::new(config, 42, now),
            clients: Vec::new(),
            to_sfu: VecDeque::new(),
            keep_to_sfu: None,
            index: HashMap::new(),
            links: HashMap::new(),
            relay_out: Vec::new(),
            events: Vec::new(),
        }
    }

    pub fn publish(&mut self, addr: &str, stream: &str) -> usize {
        self.publish_with(addr, stream, &[])
    }

    /// A publisher; with `rids`, its video is simulcast in those layers.
    pub fn publish_with(&mut self, addr: &str, stream: &str, rids: &[&str]) -> usize {
        let c = Client::new(self.now, addr);
        self.publish_client(c, stream, rids)
    }

    pub fn publish_client(&mut self, mut c: Client, stream: &str, rids: &[&str]) -> usize {
        let (offer, pending) = if rids.is_empty() {
            c.offer(Direction::SendOnly)
        } else {
            c.offer_simulcast(rids)
        };
        let published = self
            .sfu
            .publish(self.now, StreamId::new(stream).unwrap(), &offer)
            .unwrap();
        c.accept(pending, &published.answer);
        c.peer = Some(published.peer);
        self.index.insert(c.addr, self.clients.len());
        self.clients.push(c);
        self.clients.len() - 1
    }

    pub fn subscribe(&mut self, addr: &str, stream: &str) -> usize {
        self.subscribe_with(addr, stream, SubscribeOptions::default())
    }

    pub fn subscribe_with(&mut self, addr: &str, stream: &str, opts: SubscribeOptions) -> usize {
        let c = Client::new(self.now, addr);
        self.subscribe_client(c, stream, opts)
    }

    pub fn subscribe_client(
        &mut self,
        mut c: Client,
        stream: &str,
        opts: SubscribeOptions,
    ) -> usize {
        let (offer, pending) = c.offer(Direction::RecvOnly);
        let subscribed = self
            .sfu
            .subscribe_with(self.now, StreamId::new(stream).unwrap(), &offer, opts)
            .unwrap();
        self.add_viewer(c, pending, subscribed)
    }

    /// A viewer the SFU accepted: it takes the answer and joins the network.
    fn add_viewer(
        &mut self,
        mut c: Client,
        pending: SdpPendingOffer,
        subscribed: sfu::Subscribed,
    ) -> usize {
        c.accept(pending, &subscribed.answer);
        c.answer = subscribed.answer;
        c.peer = Some(subscribed.peer);
        self.index.insert(c.addr, self.clients.len());
        self.clients.push(c);
        self.clients.len() - 1
    }

    /// A viewer with `sections` video/audio pairs watching `streams` (the first the
    /// session's stream, the rest `also`).
    pub fn subscribe_stage(&mut self, addr: &str, streams: &[&str], sections: usize) -> usize {
        let mut c = Client::new(self.now, addr);
        let (offer, pending) = c.offer_sections(sections);
        let options = SubscribeOptions {
            also: streams[1..]
                .iter()
                .map(|s| StreamId::new(s).unwrap())
                .collect(),
            ..Default::default()
        };
        let subscribed = self
            .sfu
            .subscribe_with(
                self.now,
                StreamId::new(streams[0]).unwrap(),
                &offer,
                options,
            )
            .unwrap();
        self.add_viewer(c, pending, subscribed)
    }

    /// Exchange everything that is due at `now` until the network is quiet.
    pub fn settle(&mut self) {
        for _round in 0..1000 {
            let mut moved = false;
            for c in &mut self.clients {
                if c.deadline <= self.now {
                    c.rtc.handle_input(str0m::Input::Timeout(self.now)).unwrap();
                }
                loop {
                    match c.rtc.poll_output().unwrap() {
                        str0m::Output::Timeout(t) => {
                            c.deadline = t;
                            break;
                        }
                        str0m::Output::Transmit(t) => {
                            assert_eq!(t.destination, sfu_addr());
                            self.to_sfu.push_back((t.source, t.contents.into()));
                            moved = true;
                        }
                        str0m::Output::Event(e) => match e {
                            Event::Connected => c.connected = true,
                            Event::MediaData(d) => {
                                c.by_mid.entry(d.mid).or_default().push((
                                    d.data.to_vec(),
                                    (**d.seq_range.start(), **d.seq_range.end()),
                                ));
                                if Some(d.mid) == c.video {
                                    c.video_in.push((d.data.to_vec(), d.is_keyframe()));
                                    c.video_seq
                                        .push((**d.seq_range.start(), **d.seq_range.end()));
                                    c.video_time.push(d.time.numer());
                                    c.video_pts.push(*d.pt);
                                    c.video_pic.push(match d.codec_extra {
                                        CodecExtra::Vp8(e) => e.picture_id,
                                        _ => None,
                                    });
                                } else {
                                    c.audio_in.push(d.data.to_vec());
                                    c.audio_levels.push(d.ext_vals.audio_level);
                                }
                            }
                            Event::KeyframeRequest(r) => {
                                c.keyframe_requests += 1;
                                c.keyframe_rids.push(r.rid);
                            }
                            _ => {}
                        },
                    }
                }
            }
            while let Some((from, data)) = self.to_sfu.pop_front() {
                if let Some(keep) = self.keep_to_sfu.as_mut() {
                    if !keep(from, &data) {
                        continue;
                    }
                }
                self.sfu.handle_input(Input::Datagram {
                    at: self.now,
                    from,
                    to: sfu_addr(),
                    data: &data,
                });
            }
            for (addr, link) in self.links.iter_mut() {
                while link.next_due().is_some_and(|t| t <= self.now) {
                    let (_, data) = link.in_flight.pop_front().unwrap();
                    moved = true;
                    if let Some(c) = self.index.get(addr).map(|i| &mut self.clients[*i]) {
                        let recv = Receive::new(Protocol::Udp, sfu_addr(), *addr, &data).unwrap();
                        c.rtc
                            .handle_input(str0m::Input::Receive(self.now, recv))
                            .unwrap();
                    }
                }
            }
            self.sfu.handle_input(Input::Timeout(self.now));
            loop {
                match self.sfu.poll_output() {
                    Output::Transmit(t) => {
                        moved = true;
                        if let Some(link) = self.links.get_mut(&t.to) {
                            link.push(self.now, t.data);
                            continue;
                        }
                        if let Some(c) = self.index.get(&t.to).map(|i| &mut self.clients[*i]) {
                            let recv =
                                Receive::new(Protocol::Udp, sfu_addr(), t.to, &t.data).unwrap();
                            c.rtc
                                .handle_input(str0m::Input::Receive(self.now, recv))
                                .unwrap();
                        }
                    }
                    Output::Event(e) => self.events.push(e),
                    Output::Relay(p) => self.relay_out.push(p),
                    Output::Timeout(_) => break,
                }
            }
            if !moved {
                return;
            }
        }
        panic!("network did not settle");
    }

    /// Advance virtual time by `step`, settling at every millisecond that has work.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.settle();
            let sfu_next = self.sfu_deadline();
            let next = self
                .clients
                .iter()
                .map(|c| c.deadline)
                .chain([sfu_next])
                .chain(self.links.values().filter_map(Link::next_due))
                .min()
                .unwrap();
            self.now = next.max(self.now + Duration::from_millis(1)).min(end);
        }
        self.settle();
    }

    pub fn sfu_deadline(&mut self) -> Instant {
        match self.sfu.poll_output() {
            Output::Timeout(t) => t,
            Output::Event(e) => {
                self.events.push(e);
                self.now
            }
            Output::Relay(p) => {
                self.relay_out.push(p);
                self.now
            }
            Output::Transmit(_) => self.now,
        }
    }

    pub fn connect_all(&mut self) {
        for _ in 0..200 {
            self.run_for(Duration::from_millis(10));
            if self.clients.iter().all(|c| c.connected) {
                // Let the SFU see its side's Connected too.
                self.run_for(Duration::from_millis(20));
                return;
            }
        }
        panic!("peers did not connect");
    }
}

/// A VP8 frame: the frame tag (RFC 6386 section 9.1: bit 0 is 0 for a keyframe; keyframes carry
/// the start code 9d 01 2a and the dimensions), the frame counter, then `filler` bytes.
pub fn vp8_frame(n: u32, key: bool, filler: usize) -> Vec<u8> {
    let mut f = if key {
        vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]
    } else {
        vec![0x11, 0x02, 0x00]
    };
    f.extend_from_slice(&n.to_be_bytes());
    f.extend(std::iter::repeat_n((n % 251) as u8, filler));
    f
}

/// The counter of a frame made by [`vp8_frame`].
pub fn counter(frame: &[u8]) -> u32 {
    let at = if frame[0] & 1 == 0 { 10 } else { 3 };
    u32::from_be_bytes(frame[at..at + 4].try_into().unwrap())
}
