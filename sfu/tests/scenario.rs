//! Deterministic scenario tests: the sans-IO SFU and real str0m client peers over an in-memory
//! network, stepped in virtual time. No sockets, no wall clock.
//!
//! What they prove: frames reach every viewer in order and byte-identical; late viewers start
//! at once from the keyframe cache even when the publisher never sends another keyframe;
//! keyframe requests from many viewers are coalesced; a publisher that reconnects with the
//! same key keeps its viewers; garbage datagrams are counted and do not disturb the stream.
#![allow(clippy::disallowed_methods)] // the test picks the virtual epoch from the clock once

use std::net::SocketAddr;
use std::time::Duration;

use sfu::{DropReason, Input, StreamId};
use str0m::media::MediaKind;

mod support;
use support::*;

/// A publisher that sends a keyframe first and afterwards only when asked (unless `deaf`).
struct Source {
    client: usize,
    frame: u32,
    sent: Vec<(Vec<u8>, bool)>,
    answered_requests: usize,
    ts: u64,
    /// Never answers keyframe requests (some encoders and misconfigured OBS setups).
    deaf: bool,
    /// Bytes of filler per frame (more than one RTP packet above ~1,100).
    filler: usize,
}

impl Source {
    fn new(client: usize, ts: u64) -> Self {
        Self {
            client,
            frame: 0,
            sent: Vec::new(),
            answered_requests: 0,
            ts,
            deaf: false,
            filler: 300,
        }
    }

    fn tick(&mut self, w: &mut World) {
        let c = &mut w.clients[self.client];
        let asked = c.keyframe_requests > self.answered_requests;
        self.answered_requests = c.keyframe_requests;
        let key = self.frame == 0 || (asked && !self.deaf);
        let data = vp8_frame(self.frame, key, self.filler);
        c.write(w.now, MediaKind::Video, self.ts, data.clone());
        c.write(
            w.now,
            MediaKind::Audio,
            self.ts * 48 / 90,
            vec![0xfc, (self.frame % 256) as u8, 7, 7],
        );
        self.sent.push((data, key));
        self.frame += 1;
        self.ts += 3000;
    }

    fn run(&mut self, w: &mut World, frames: usize) {
        for _ in 0..frames {
            self.tick(w);
            w.run_for(Duration::from_millis(33));
        }
    }
}

#[test]
fn subscribers_receive_publisher_frames_in_order_and_identical() {
    let mut w = World::new();
    let p = w.publish("127.0.0.2:1000", "demo");
    let a = w.subscribe("127.0.0.3:1000", "demo");
    let b = w.subscribe("127.0.0.4:1000", "demo");
    w.connect_all();
    let mut src = Source::new(p, 90_000);
    src.run(&mut w, 60);

    for viewer in [a, b] {
        let got = &w.clients[viewer].video_in;
        assert!(
            got.len() >= 55,
            "viewer {viewer} got {} of 60 frames",
            got.len()
        );
        assert!(got[0].1, "the first frame a viewer gets is a keyframe");
        // Every received frame equals the sent frame at the same position from its start.
        let start = src
            .sent
            .iter()
            .position(|s| s.0 == got[0].0)
            .expect("first frame was sent");
        for (i, (data, _)) in got.iter().enumerate() {
            assert_eq!(
                data,
                &src.sent[start + i].0,
                "viewer {viewer} frame {i} differs or is out of order"
            );
        }
        assert!(
            w.clients[viewer].audio_in.len() >= 55,
            "audio reaches viewer {viewer}"
        );
    }
    assert_eq!(w.sfu.stats().drops_for(DropReason::Malformed), 0);
}

#[test]
fn late_viewers_start_from_the_keyframe_cache_when_the_publisher_never_sends_another() {
    let mut w = World::new();
    let p = w.publish("127.0.0.2:1000", "demo");
    w.connect_all();
    let mut src = Source::new(p, 0);
    src.deaf = true;
    src.run(&mut w, 60); // 2 s of media: one keyframe at the start, then only deltas

    let late: Vec<usize> = ["127.0.0.5:1000", "127.0.0.6:1000", "127.0.0.7:1000"]
        .iter()
        .map(|a| w.subscribe(a, "demo"))
        .collect();
    w.connect_all();
    src.run(&mut w, 30);

    for &v in &late {
        let c = &w.clients[v];
        let frames: Vec<u32> = c.video_in.iter().map(|(f, _)| counter(f)).collect();
        assert!(
            c.video_in[0].1,
            "late viewer {v} starts on the cached keyframe"
        );
        assert_eq!(
            frames[0], 0,
            "the cached group starts at the publisher's only keyframe"
        );
        let expected: Vec<u32> = (0..frames.len() as u32).collect();
        assert_eq!(
            frames, expected,
            "viewer {v}: the whole group, then live, nothing missing"
        );
        // The replayed group is compressed to 1 ms per frame so the viewer ends at the live
        // edge; live frames then follow at the publisher's 33 ms pace.
        let times = &c.video_time;
        let replayed = times.windows(2).take_while(|t| t[1] - t[0] == 90).count();
        assert!(
            replayed >= 55,
            "viewer {v}: {replayed} frames replayed at 1 ms spacing"
        );
        assert!(
            times
                .windows(2)
                .skip(replayed + 1)
                .all(|t| t[1] - t[0] == 3000),
            "viewer {v}: live spacing after the replay: {times:?}"
        );
        // One gapless sequence from the replay into the live stream.
        for pair in c.video_seq.windows(2) {
            assert_eq!(
                pair[1].0,
                pair[0].1 + 1,
                "viewer {v}: sequence gap {pair:?}"
            );
        }
    }
    assert_eq!(w.sfu.stats().cache_starts, 3);
    assert!(
        w.clients[p].keyframe_requests >= 1,
        "a 2 s group is long: the SFU also asked for a fresh keyframe (ignored here)"
    );
}

#[test]
fn a_viewer_replaying_a_long_cache_jumps_to_a_fresh_keyframe() {
    let mut w = World::new();
    let p = w.publish("127.0.0.2:1000", "demo");
    w.connect_all();
    let mut src = Source::new(p, 0);
    src.run(&mut w, 60); // a 2 s group in the cache
    let v = w.subscribe("127.0.0.5:1000", "demo");
    w.connect_all();
    src.run(&mut w, 30);

    let c = &w.clients[v];
    let frames: Vec<(u32, bool)> = c.video_in.iter().map(|(f, k)| (counter(f), *k)).collect();
    assert_eq!(
        frames[0],
        (0, true),
        "starts on the cached keyframe at once"
    );
    let jump = frames
        .iter()
        .skip(1)
        .position(|(_, k)| *k)
        .map(|i| i + 1)
        .expect("the viewer moved to the fresh keyframe");
    let (fresh, _) = frames[jump];
    assert!(fresh >= 60, "the fresh keyframe is live (frame {fresh})");
    assert!(
        jump < 60,
        "the rest of the old group was skipped ({jump} replayed)"
    );
    let after: Vec<u32> = frames[jump..].iter().map(|f| f.0).collect();
    let expected: Vec<u32> = (fresh..fresh + after.len() as u32).collect();
    assert_eq!(after, expected, "live and complete after the jump");
    for pair in c.video_seq.windows(2) {
        assert_eq!(pair[1].0, pair[0].1 + 1, "sequence gap {pair:?}");
    }
}

#[test]
fn a_replay_cut_short_by_a_fresh_keyframe_ends_on_a_whole_frame() {
    // Frames of three RTP packets: a fresh keyframe arriving mid-replay lands inside a frame.
    let mut w = World::new();
    let p = w.publish("127.0.0.2:1000", "demo");
    w.connect_all();
    let mut src = Source::new(p, 0);
    src.filler = 3000;
    src.run(&mut w, 60);
    let v = w.subscribe("127.0.0.5:1000", "demo");
    w.connect_all();
    src.run(&mut w, 30);

    let c = &w.clients[v];
    let jump = c
        .video_in
        .iter()
        .skip(1)
        .position(|(_, k)| *k)
        .map(|i| i + 1)
        .expect("the viewer moved to a fresh keyframe");
    assert!(
        jump < 60,
        "the replay was cut short ({jump} frames replayed)"
    );
    // Every frame the viewer assembled is a frame the publisher sent, whole: none is the
    // front of a replayed frame glued to the back of another.
    for (i, (data, _)) in c.video_in.iter().enumerate() {
        let n = counter(data) as usize;
        assert_eq!(data, &src.sent[n].0, "frame {i} (counter {n}) is not whole");
    }
    for pair in c.video_seq.windows(2) {
        assert_eq!(pair[1].0, pair[0].1 + 1, "sequence gap {pair:?}");
    }
}

#[test]
fn a_large_cached_keyframe_is_paced_into_a_small_receive_buffer() {
    // OBS at 640x360: a ~150 KB IDR every 2 s, keyframe requests ignored.
    let mut w = World::new();
    let p = w.publish("127.0.0.2:1000", "demo");
    w.connect_all();
    let mut src = Source::new(p, 0);
    src.deaf = true;
    src.filler = 150_000;
    src.tick(&mut w); // the keyframe
    src.filler = 500;
    src.run(&mut w, 10);
    // The viewer's receive buffer: drained at 100 Mbit/s, holding 5 ms of it (62 KB).
    let v = w.subscribe("127.0.0.5:1000", "demo");
    let addr = w.clients[v].addr;
    let mut buffer = Link::new(100_000_000, Duration::from_millis(1));
    buffer.max_queue = Duration::from_millis(5);
    w.links.insert(addr, buffer);
    w.connect_all();
    src.run(&mut w, 20);

    let link = &w.links[&addr];
    assert!(link.sent > 130, "the keyframe is {} packets", link.sent);
    assert_eq!(
        link.dropped, 0,
        "the replayed keyframe overflowed the buffer"
    );
    let c = &w.clients[v];
    assert_eq!(
        counter(&c.video_in[0].0),
        0,
        "starts on the cached keyframe"
    );
    assert!(c.video_in.len() >= 25, "{} frames", c.video_in.len());
}

#[test]
fn keyframe_requests_from_many_viewers_are_coalesced() {
    let mut w = World::new();
    let p = w.publish("127.0.0.2:1000", "demo");
    let viewers: Vec<usize> = (0..3)
        .map(|i| w.subscribe(&format!("127.0.0.{}:1000", 5 + i), "demo"))
        .collect();
    w.connect_all();
    let mut src = Source::new(p, 0);
    src.run(&mut w, 30);
    let before = w.clients[p].keyframe_requests;

    // Every viewer asks for a keyframe (PLI) at the same moment, twice.
    for _ in 0..2 {
        for &v in &viewers {
            let c = &mut w.clients[v];
            let mid = c.video.unwrap();
            c.rtc
                .direct_api()
                .stream_rx_by_mid(mid, None)
                .expect("viewer receive stream")
                .request_keyframe(str0m::media::KeyframeRequestKind::Pli);
        }
        w.run_for(Duration::from_millis(10));
    }
    src.run(&mut w, 30);
    let seen = w.clients[p].keyframe_requests - before;
    assert!(
        (1..=2).contains(&seen),
        "6 requests within 20 ms reached the publisher as {seen}"
    );
    assert!(w.sfu.stats().keyframe_requests_in >= 6);
    for &v in &viewers {
        assert!(w.clients[v].video_in.len() >= 55, "viewer {v} kept playing");
    }
}

#[test]
fn publisher_reconnect_keeps_viewers_on_new_media() {
    let mut w = World::new();
    let first = w.publish("127.0.0.2:1000", "demo");
    let viewer = w.subscribe("127.0.0.3:1000", "demo");
    w.connect_all();
    let mut src = Source::new(first, 1_000_000);
    src.run(&mut w, 30);
    let before = w.clients[viewer].video_in.len();

    // OBS reconnects with the same key: a new publisher replaces the old one.
    let second = w.publish("127.0.0.8:1000", "demo");
    w.connect_all_except(first);
    let mut src2 = Source::new(second, 7);
    src2.run(&mut w, 30);

    let got = &w.clients[viewer].video_in[before..];
    assert!(
        got.len() >= 25,
        "viewer got {} frames from the new publisher",
        got.len()
    );
    assert!(
        got[0].1,
        "the viewer continues on the new publisher's keyframe"
    );
    assert!(
        src2.sent.iter().any(|s| s.0 == got[0].0),
        "frames come from the new publisher"
    );
    // One gapless RTP sequence across the first viewer start and the publisher change: the
    // SFU renumbers each publisher's packets for this viewer.
    let seqs = &w.clients[viewer].video_seq;
    for pair in seqs.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].1 + 1,
            "sequence gap between frames: {pair:?}"
        );
    }
    assert_eq!(w.sfu.stats().publishers, 1);
    assert_eq!(w.sfu.stats().subscribers, 1);
}

#[test]
fn garbage_datagrams_are_counted_and_do_not_disturb_the_stream() {
    let mut w = World::new();
    let p = w.publish("127.0.0.2:1000", "demo");
    let viewer = w.subscribe("127.0.0.3:1000", "demo");
    w.connect_all();
    let mut src = Source::new(p, 0);
    let mut seed = 0x1234_5678_9abc_def0u64;
    for _ in 0..60 {
        src.tick(&mut w);
        for _ in 0..100 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 1200) as usize;
            let data: Vec<u8> = (0..len).map(|i| (seed >> (i % 56)) as u8).collect();
            // From strangers and from the publisher's own address.
            let from: SocketAddr = if seed.is_multiple_of(3) {
                "127.0.0.2:1000"
            } else {
                "127.0.0.99:4000"
            }
            .parse()
            .unwrap();
            w.sfu.handle_input(Input::Datagram {
                at: w.now,
                from,
                to: sfu_addr(),
                data: &data,
            });
        }
        w.run_for(Duration::from_millis(33));
    }
    let got = &w.clients[viewer].video_in;
    assert!(
        got.len() >= 55,
        "viewer got {} of 60 frames under garbage",
        got.len()
    );
    let s = w.sfu.stats();
    assert!(
        s.drops_for(DropReason::Malformed)
            + s.drops_for(DropReason::UnknownSource)
            + s.drops_for(DropReason::Rejected)
            > 3000
    );
    assert_eq!(s.publishers, 1);
    assert_eq!(s.subscribers, 1);
}

#[test]
fn closing_sessions_frees_everything() {
    let mut w = World::new();
    let p = w.publish("127.0.0.2:1000", "demo");
    let v = w.subscribe("127.0.0.3:1000", "demo");
    w.connect_all();
    let (pp, vp) = (w.clients[p].peer.unwrap(), w.clients[v].peer.unwrap());
    w.sfu.close(vp).unwrap();
    w.sfu.close(pp).unwrap();
    w.run_for(Duration::from_millis(50));
    assert_eq!(w.sfu.peer_count(), 0);
    assert!(!w.sfu.is_live(&StreamId::new("demo").unwrap()));
    assert!(w.sfu.close(vp).is_err(), "a closed session is unknown");
}

impl World {
    fn connect_all_except(&mut self, gone: usize) {
        for _ in 0..200 {
            self.run_for(Duration::from_millis(10));
            if self
                .clients
                .iter()
                .enumerate()
                .all(|(i, c)| i == gone || c.connected)
            {
                self.run_for(Duration::from_millis(20));
                return;
            }
        }
        panic!("peers did not connect");
    }
}

#[test]
fn video_packet_lost_on_ingest_is_recovered_and_reaches_the_viewer() {
    ingest_loss_is_recovered(1);
}

#[test]
fn a_burst_of_eight_packets_lost_on_ingest_is_recovered_by_nack() {
    ingest_loss_is_recovered(8);
}

/// Drop `burst` consecutive publisher video packets from the 30th on; the viewer must still get
/// every frame after its first (NACK from the SFU's publisher engine, RTX from the publisher).
fn ingest_loss_is_recovered(burst: u32) {
    let mut w = World::new();
    let p = w.publish("127.0.0.2:1000", "demo");
    let v = w.subscribe("127.0.0.3:1000", "demo");
    w.connect_all();
    // Drop publisher video RTP packets 30.. (the header is readable in SRTP), first sends only.
    let publisher = w.clients[p].addr;
    let video_pt = {
        let c = &mut w.clients[p];
        let mid = c.video.unwrap();
        let writer = c.rtc.writer(mid).unwrap();
        let pt = writer
            .payload_params()
            .find(|x| x.spec().codec == str0m::format::Codec::Vp8)
            .unwrap()
            .pt();
        *pt
    };
    let mut seen = 0;
    w.keep_to_sfu = Some(Box::new(move |from, data| {
        if from != publisher || data.len() < 12 || data[1] & 0x7f != video_pt {
            return true;
        }
        seen += 1;
        !(30..30 + burst).contains(&seen)
    }));
    let mut src = Source::new(p, 0);
    src.run(&mut w, 60);
    w.run_for(Duration::from_millis(500));
    let got: Vec<u32> = w.clients[v]
        .video_in
        .iter()
        .map(|(f, _)| counter(f))
        .collect();
    let first = got[0];
    let expected: Vec<u32> = (first..60).collect();
    assert_eq!(got, expected, "the viewer misses no frame after its first");
}

#[test]
fn a_viewer_that_goes_silent_is_closed_and_counted() {
    let mut w = World::new();
    let p = w.publish("127.0.0.2:1000", "demo");
    let v = w.subscribe("127.0.0.3:1000", "demo");
    let stays = w.subscribe("127.0.0.4:1000", "demo");
    w.connect_all();
    let mut src = Source::new(p, 0);
    src.run(&mut w, 30);
    assert_eq!(w.sfu.stats().subscribers, 2);

    // The viewer's network goes away: nothing from it reaches the SFU any more (no consent
    // checks, no RTCP), as when a laptop lid closes.
    let gone = w.clients[v].addr;
    w.keep_to_sfu = Some(Box::new(move |from, _| from != gone));
    let mut silent_for = Duration::ZERO;
    while w.sfu.stats().subscribers == 2 && silent_for < Duration::from_secs(60) {
        src.run(&mut w, 30);
        silent_for += Duration::from_millis(990);
    }
    assert_eq!(w.sfu.stats().subscribers, 1, "the silent viewer was closed");
    assert!(
        silent_for <= Duration::from_secs(40),
        "within consent-freshness time: {silent_for:?}"
    );
    assert_eq!(w.sfu.stats().disconnects, 1, "counted");
    let before = w.clients[stays].video_in.len();
    src.run(&mut w, 30);
    assert!(
        w.clients[stays].video_in.len() >= before + 25,
        "the other viewer plays on"
    );
}

#[test]
fn opus_red_passes_through_to_red_viewers_and_reaches_others_as_plain_opus() {
    let mut w = World::new();
    let now = w.now;
    let p = w.publish_client(Client::with_red(now, "127.0.0.2:1000", true), "demo", &[]);
    let with_red = w.subscribe_client(
        Client::with_red(now, "127.0.0.3:1000", true),
        "demo",
        Default::default(),
    );
    let plain = w.subscribe("127.0.0.4:1000", "demo");
    w.connect_all();
    let audio = w.clients[p].audio.unwrap();
    w.clients[p].rtc.direct_api().set_red_send(audio, true);
    let red_pt = |c: &Client| {
        c.rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == str0m::format::Codec::Opus)
            .and_then(|p| p.red())
    };
    // Count what goes on the wire as RED (the RTP header is not encrypted by SRTP).
    let publisher_red = *red_pt(&w.clients[p]).expect("the publisher negotiated RED");
    let from = w.clients[p].addr;
    let red_seen = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let seen = red_seen.clone();
    w.keep_to_sfu = Some(Box::new(move |addr, data| {
        if addr == from && data.len() > 12 && data[0] >> 6 == 2 && data[1] & 0x7f == publisher_red {
            seen.set(seen.get() + 1);
        }
        true
    }));
    let sent: Vec<Vec<u8>> = (0..100u32)
        .map(|i| {
            let mut f = i.to_be_bytes().to_vec();
            f.extend(std::iter::repeat_n(i as u8, 60));
            f
        })
        .collect();
    for (i, f) in sent.iter().enumerate() {
        let now = w.now;
        w.clients[p].write(now, MediaKind::Audio, 960 * i as u64, f.clone());
        w.run_for(Duration::from_millis(20));
    }
    w.run_for(Duration::from_millis(200));
    assert!(
        red_seen.get() >= 95,
        "the publisher sent RED: {}",
        red_seen.get()
    );
    assert!(red_pt(&w.clients[with_red]).is_some(), "RED negotiated");
    assert!(
        red_pt(&w.clients[plain]).is_none(),
        "no RED for this viewer"
    );
    assert_eq!(w.sfu.stats().drops_for(DropReason::UnknownPayloadType), 0);
    for v in [with_red, plain] {
        let got = &w.clients[v].audio_in;
        // Both decode to exactly the publisher's Opus frames, in order.
        assert!(got.len() >= 95, "viewer {v}: {} of 100 frames", got.len());
        let first = sent.iter().position(|f| f == &got[0]).unwrap();
        assert_eq!(got[..], sent[first..first + got.len()], "viewer {v}");
    }
}
