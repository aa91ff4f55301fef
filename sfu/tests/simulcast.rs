//! Simulcast scenario tests: a str0m publisher sending three VP8 layers, str0m viewers behind
//! shaped in-memory downlinks, the sans-IO SFU choosing each viewer's layer from its own
//! bandwidth estimate (TWCC), in virtual time.
//!
//! What they prove: each viewer ends on the layer its link carries; a capped viewer moves up
//! when the cap is lifted and down when it returns; switches happen only on keyframes of the
//! target layer, and the viewer sees one gapless sequence across them (the VP8 picture-id
//! rewrite is unit-tested in `sfu::viewer::layer` and exercised by the Chromium test); a pinned viewer stays on its pin; a viewer under 10 % random loss
//! decodes nearly every frame (NACK/RTX from the SFU's own send cache).
#![allow(clippy::disallowed_methods)] // the test picks the virtual epoch from the clock once

use std::time::{Duration, Instant};

use sfu::{Pin, SubscribeOptions};

mod support;
use support::*;

const RIDS: [&str; 3] = ["q", "h", "f"];
/// Bytes per frame per layer at 30 fps: about 150 kbit/s, 500 kbit/s and 1.5 Mbit/s.
const SIZES: [usize; 3] = [600, 2_000, 6_000];
/// A periodic keyframe on every layer (as OBS's keyint); requests get one sooner.
const KEYINT_FRAMES: u32 = 120;

/// A simulcast publisher: three layers of synthetic VP8 frames, each frame's counter saying
/// its layer (`layer * 1_000_000 + n`). Answers keyframe requests per layer.
struct Simulcaster {
    client: usize,
    frame: u32,
    ts: u64,
    answered: usize,
}

impl Simulcaster {
    fn tick(&mut self, w: &mut World) {
        let c = &mut w.clients[self.client];
        let asked: Vec<_> = c.keyframe_rids[self.answered..].to_vec();
        self.answered = c.keyframe_rids.len();
        for (i, rid) in RIDS.iter().enumerate() {
            let requested = asked
                .iter()
                .any(|r| r.is_none() || r.as_ref().is_some_and(|r| &**r == *rid));
            let key = self.frame.is_multiple_of(KEYINT_FRAMES) || requested;
            let n = i as u32 * 1_000_000 + self.frame;
            c.write_layer(w.now, rid, self.ts, vp8_frame(n, key, SIZES[i]));
        }
        self.frame += 1;
        self.ts += 3_000;
    }

    /// Run `d` of virtual time, a frame every 33 ms.
    fn run(&mut self, w: &mut World, d: Duration) {
        let frames = d.as_millis() / 33;
        for _ in 0..frames {
            self.tick(w);
            w.run_for(Duration::from_millis(33));
        }
    }

    /// Run until `done` holds (checked every frame), at most `limit`; returns the time taken.
    fn run_until(
        &mut self,
        w: &mut World,
        limit: Duration,
        mut done: impl FnMut(&World) -> bool,
    ) -> Option<Duration> {
        let start = w.now;
        while w.now < start + limit {
            self.tick(w);
            w.run_for(Duration::from_millis(33));
            if done(w) {
                return Some(w.now - start);
            }
        }
        None
    }
}

fn layer_of(frame: &[u8]) -> u32 {
    counter(frame) / 1_000_000
}

/// The layer of the last frame a viewer received.
fn last_layer(w: &World, viewer: usize) -> Option<u32> {
    w.clients[viewer].video_in.last().map(|(f, _)| layer_of(f))
}

/// Every layer change a viewer saw lands on a keyframe; sequence numbers and picture ids run
/// on without a gap from `from` (a frame index) on. Returns the number of switches.
fn assert_clean_switches(w: &World, viewer: usize, from: usize, to: usize) -> usize {
    let c = &w.clients[viewer];
    let mut switches = 0;
    for i in from.max(1)..to.min(c.video_in.len()) {
        let (prev, _) = &c.video_in[i - 1];
        let (frame, key) = &c.video_in[i];
        if layer_of(prev) != layer_of(frame) {
            switches += 1;
            assert!(
                key,
                "viewer {viewer}: switch at frame {i} is not on a keyframe"
            );
        }
        assert_eq!(
            c.video_seq[i].0,
            c.video_seq[i - 1].1 + 1,
            "viewer {viewer}: sequence gap before frame {i}"
        );
        // str0m's packetizer sends no picture ids; where a publisher sends them (libwebrtc
        // does), they must run on too.
        if let (Some(a), Some(b)) = (c.video_pic[i - 1], c.video_pic[i]) {
            assert_eq!(
                b,
                a + 1,
                "viewer {viewer}: picture id jump before frame {i}"
            );
        }
    }
    switches
}

fn setup(w: &mut World) -> Simulcaster {
    let p = w.publish_with("127.0.0.1:6000", "sim", &RIDS);
    let mut s = Simulcaster {
        client: p,
        frame: 0,
        ts: 90_000,
        answered: 0,
    };
    w.connect_all();
    // Let the SFU measure every layer before viewers arrive.
    s.run(w, Duration::from_secs(2));
    s
}

#[test]
fn each_viewer_gets_the_layer_its_bandwidth_carries_and_switches_only_on_keyframes() {
    let mut w = World::new();
    let mut s = setup(&mut w);
    let wide = w.subscribe("127.0.0.1:6001", "sim");
    let capped = w.subscribe("127.0.0.1:6002", "sim");
    w.links.insert(
        w.clients[capped].addr,
        Link::new(400_000, Duration::from_millis(20)),
    );
    w.links.insert(
        w.clients[wide].addr,
        Link::new(20_000_000, Duration::from_millis(20)),
    );
    w.connect_all();

    // The unconstrained viewer starts low and climbs to the top layer.
    let up = s.run_until(&mut w, Duration::from_secs(30), |w| {
        last_layer(w, wide) == Some(2)
    });
    let up = up.expect("the unconstrained viewer reached the top layer");
    s.run(&mut w, Duration::from_secs(3));
    assert_eq!(last_layer(&w, wide), Some(2));
    assert_eq!(last_layer(&w, capped), Some(0), "400 kbit/s carries only q");
    let first = w.clients[capped].video_in.first().unwrap();
    assert_eq!(layer_of(&first.0), 0, "viewers start on the lowest layer");

    // Lift the cap: the capped viewer climbs.
    let at_lift = w.clients[capped].video_in.len();
    w.links.get_mut(&w.clients[capped].addr).unwrap().rate_bps = 20_000_000;
    let lifted = s
        .run_until(&mut w, Duration::from_secs(30), |w| {
            last_layer(w, capped) == Some(2)
        })
        .expect("the viewer moved up once its cap was lifted");
    let before_cap = w.clients[capped].video_in.len();

    // Cap it again: it steps down.
    w.links.get_mut(&w.clients[capped].addr).unwrap().rate_bps = 400_000;
    let down = s
        .run_until(&mut w, Duration::from_secs(15), |w| {
            last_layer(w, capped) == Some(0)
        })
        .expect("the viewer moved down when capped");
    s.run(&mut w, Duration::from_secs(2));

    let wide_frames = w.clients[wide].video_in.len();
    let wide_switches = assert_clean_switches(&w, wide, 0, wide_frames);
    let capped_switches = assert_clean_switches(&w, capped, 0, before_cap);
    assert!(wide_switches >= 1 && capped_switches >= 1);
    // After the second cap, frames lost in the overflowing queue may be skipped, but every
    // switch still lands on a keyframe.
    let c = &w.clients[capped];
    for i in before_cap..c.video_in.len() {
        if layer_of(&c.video_in[i - 1].0) != layer_of(&c.video_in[i].0) {
            assert!(
                c.video_in[i].1,
                "switch down at frame {i} not on a keyframe"
            );
        }
    }
    assert_eq!(last_layer(&w, capped), Some(0));
    let stats = w.sfu.stats();
    assert!(stats.layer_switches >= 3, "{stats:?}");
    eprintln!(
        "layer switch times (virtual): start->top {up:?}; cap lifted->top {lifted:?} \
         (from frame {at_lift}); capped again->low {down:?}"
    );
}

#[test]
fn a_pinned_viewer_stays_on_its_layer_and_can_change_it() {
    let mut w = World::new();
    let mut s = setup(&mut w);
    let low = w.subscribe_with(
        "127.0.0.1:6001",
        "sim",
        SubscribeOptions {
            layer: Pin::Low,
            ..Default::default()
        },
    );
    let high = w.subscribe_with(
        "127.0.0.1:6002",
        "sim",
        SubscribeOptions {
            layer: Pin::High,
            ..Default::default()
        },
    );
    w.connect_all();
    s.run(&mut w, Duration::from_secs(4));
    assert_eq!(last_layer(&w, low), Some(0));
    assert_eq!(last_layer(&w, high), Some(2));
    // The pinned-high viewer starts on its layer (from that layer's cache), not on q.
    let first = &w.clients[high].video_in[0];
    assert_eq!(layer_of(&first.0), 2);
    // The quality menu moves the low viewer to mid.
    let peer = w.clients[low].peer.unwrap();
    w.sfu.set_layer(peer, Pin::Mid).unwrap();
    let took = s
        .run_until(&mut w, Duration::from_secs(5), |w| {
            last_layer(w, low) == Some(1)
        })
        .expect("moved to the pinned layer");
    let n = w.clients[low].video_in.len();
    assert_clean_switches(&w, low, 0, n);
    eprintln!("pin change low->mid took {took:?} (virtual)");
}

#[test]
fn ten_percent_random_loss_on_a_viewers_link_loses_under_one_percent_of_frames() {
    let mut w = World::new();
    let p = w.publish("127.0.0.1:6000", "loss");
    let v = w.subscribe("127.0.0.1:6001", "loss");
    w.connect_all();
    w.links.insert(w.clients[v].addr, Link::lossy(0.10, 7));
    // One layer, 30 fps, a keyframe every 4 s, 2 KB frames (two packets).
    let t0: Instant = w.now;
    let frames = 900u32;
    for n in 0..frames {
        let key = n % 120 == 0 || w.clients[p].keyframe_requests > 0;
        w.clients[p].keyframe_requests = 0;
        let now = w.now;
        w.clients[p].write(
            now,
            str0m::media::MediaKind::Video,
            90_000 + u64::from(n) * 3_000,
            vp8_frame(n, key, 2_000),
        );
        w.run_for(Duration::from_millis(33));
    }
    w.run_for(Duration::from_millis(500));
    let link = &w.links[&w.clients[v].addr];
    let received: Vec<u32> = w.clients[v]
        .video_in
        .iter()
        .map(|(f, _)| counter(f))
        .collect();
    let first = received[0];
    let expected = frames - first;
    let lost = expected as usize - received.len();
    let loss_rate = link.dropped as f64 / link.sent as f64;
    eprintln!(
        "10% link loss over {:?}: {} of {} datagrams dropped ({:.1} %), {} of {} frames lost",
        w.now - t0,
        link.dropped,
        link.sent,
        loss_rate * 100.0,
        lost,
        expected
    );
    assert!(loss_rate > 0.08, "the link really lost about 10 %");
    assert!(
        (lost as f64) < f64::from(expected) * 0.01,
        "{lost} of {expected} frames lost"
    );
    // Frames arrive in order, each exactly once.
    assert!(received.windows(2).all(|p| p[0] < p[1]));
}
