//! The relay between two sans-IO cores, in virtual time: an origin with a publisher, an edge fed
//! only by the origin's relay output, viewers at the edge. No QUIC yet: the test carries the
//! relay packets and messages between the cores the way the transport will.
//!
//! What it proves: edge viewers get the publisher's frames, in order and byte-identical; a
//! viewer at a cold edge starts from the cache the origin sends on subscribe; the origin emits
//! one copy per edge as the edge's viewers grow from 1 to 20; a keyframe request at the edge reaches
//! the origin's publisher; a new publisher at the origin is announced and followed.
#![allow(clippy::disallowed_methods)] // the test picks the virtual epoch from the clock once

use std::time::Duration;

use media_core::keyframe_start::{starts_keyframe, VideoFormat};
use sfu::{RelayId, SfuEvent, StreamId};
use str0m::media::MediaKind;

mod support;
use support::*;

const EDGE: RelayId = RelayId(1);

struct Pair {
    origin: World,
    edge: World,
    frame: u32,
    publisher: usize,
    /// Filler bytes per frame (1,500: two packets; more for keyframes of several).
    filler: usize,
    /// Deliver each video keyframe's first relay packet after the rest of its frame, as a
    /// relay loss repaired by NACK does.
    hold_keyframe_starts: bool,
    held: Vec<sfu::RelayPacket>,
    keyframe_starts_held: usize,
}

impl Pair {
    fn new() -> Self {
        let mut origin = World::new();
        let publisher = origin.publish("127.0.0.2:1000", "demo");
        origin.connect_all();
        Self {
            origin,
            edge: World::new(),
            frame: 0,
            publisher,
            filler: 1_500,
            hold_keyframe_starts: false,
            held: Vec::new(),
            keyframe_starts_held: 0,
        }
    }

    fn stream() -> StreamId {
        StreamId::new("demo").unwrap()
    }

    /// One frame at the origin (a keyframe when asked and every 90 frames), 33 ms of both
    /// worlds, and everything the relay carries in between.
    fn tick(&mut self) {
        let c = &mut self.origin.clients[self.publisher];
        let key = self.frame.is_multiple_of(90) || c.keyframe_requests > 0;
        c.keyframe_requests = 0;
        let now = self.origin.now;
        let ts = 90_000 + u64::from(self.frame) * 3_000;
        c.write(
            now,
            MediaKind::Video,
            ts,
            vp8_frame(self.frame, key, self.filler),
        );
        c.write(
            now,
            MediaKind::Audio,
            u64::from(self.frame) * 1_584,
            vec![self.frame as u8; 40],
        );
        self.frame += 1;
        for _ in 0..33 {
            self.origin.run_for(Duration::from_millis(1));
            self.carry();
            self.edge.run_for(Duration::from_millis(1));
            self.carry();
        }
    }

    /// Move relay output and events between the cores.
    fn carry(&mut self) {
        for e in std::mem::take(&mut self.origin.events) {
            match e {
                SfuEvent::RelayTracks(_, tracks) => self.edge.sfu.relay_tracks(tracks).unwrap(),
                SfuEvent::RelayOffline(_, stream) => self.edge.sfu.relay_offline(&stream),
                _ => {}
            }
        }
        let at = self.edge.now;
        for p in std::mem::take(&mut self.origin.relay_out) {
            assert_eq!(p.relay, EDGE);
            let payload = &p.data[12..];
            if self.hold_keyframe_starts
                && p.track != sfu::AUDIO_TRACK
                && starts_keyframe(VideoFormat::Vp8, payload)
            {
                self.keyframe_starts_held += 1;
                self.held.push(p);
                continue;
            }
            // A held keyframe start arrives once the rest of its frame has.
            let time = &p.data[4..8];
            let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
                .into_iter()
                .partition(|h| h.track == p.track && &h.data[4..8] != time);
            self.held = keep;
            for h in due.iter().chain(std::iter::once(&p)) {
                self.edge
                    .sfu
                    .relay_ingest(at, &Self::stream(), h.track, &h.data);
            }
        }
        for e in std::mem::take(&mut self.edge.events) {
            if let SfuEvent::UpstreamKeyframe(stream, track) = e {
                self.origin.sfu.relay_keyframe(&stream, track);
            }
        }
    }

    fn subscribe_edge(&mut self) {
        let tracks = self
            .origin
            .sfu
            .relay_subscribe(EDGE, Self::stream())
            .unwrap();
        self.edge.sfu.relay_tracks(tracks).unwrap();
        self.carry();
    }
}

#[test]
fn edge_viewers_get_the_publishers_frames_and_the_origin_sends_one_copy_per_edge() {
    let mut p = Pair::new();
    for _ in 0..20 {
        p.tick();
    }
    // A cold edge subscribes mid-group: the origin's cache comes first.
    p.subscribe_edge();
    let a = p.edge.subscribe("127.0.0.3:1000", "demo");
    p.edge.connect_all();
    let before = p.origin.sfu.stats().relay_packets;
    for _ in 0..30 {
        p.tick();
    }
    let with_one = p.origin.sfu.stats().relay_packets - before;
    // 19 more viewers at the edge: the origin's relay output stays one copy.
    let more: Vec<usize> = (0..19)
        .map(|i| p.edge.subscribe(&format!("127.0.1.{}:1000", i + 1), "demo"))
        .collect();
    p.edge.connect_all();
    let before = p.origin.sfu.stats().relay_packets;
    for _ in 0..30 {
        p.tick();
    }
    let with_twenty = p.origin.sfu.stats().relay_packets - before;
    eprintln!("relay packets over 30 frames: {with_one} with 1 edge viewer, {with_twenty} with 20");
    assert!(with_one > 0);
    // Equal up to the frames that fell into connect_all's extra virtual time.
    let diff = with_one.abs_diff(with_twenty);
    assert!(
        diff * 10 <= with_one,
        "relay output {with_one} with one viewer, {with_twenty} with twenty"
    );
    for v in std::iter::once(a).chain(more) {
        let got: Vec<u32> = p.edge.clients[v]
            .video_in
            .iter()
            .map(|(f, _)| counter(f))
            .collect();
        assert!(got.len() > 20, "viewer {v} got {} frames", got.len());
        let first = got[0];
        let want: Vec<u32> = (first..first + got.len() as u32).collect();
        assert_eq!(got, want, "viewer {v}: in order, none missing");
        // Byte-identical to what the publisher sent.
        let (frame, _) = &p.edge.clients[v].video_in[0];
        assert_eq!(frame, &vp8_frame(first, frame[0] & 1 == 0, 1_500));
        assert!(
            !p.edge.clients[v].audio_in.is_empty(),
            "viewer {v} gets audio"
        );
    }
    // The first edge viewer started before the publisher's next periodic keyframe (frame
    // 90): from the cache the origin sent on subscribe.
    let first_a = counter(&p.edge.clients[a].video_in[0].0);
    eprintln!("first edge viewer started at frame {first_a}");
    assert!(first_a < 90, "viewer a started at frame {first_a}");
}

#[test]
fn a_new_publisher_at_the_origin_is_followed_by_the_edge() {
    let mut p = Pair::new();
    for _ in 0..5 {
        p.tick();
    }
    p.subscribe_edge();
    let v = p.edge.subscribe("127.0.0.3:1000", "demo");
    p.edge.connect_all();
    for _ in 0..10 {
        p.tick();
    }
    let before = p.edge.clients[v].video_in.len();
    assert!(before > 0);
    // OBS reconnects with the same key at the origin.
    p.publisher = p.origin.publish("127.0.0.9:1000", "demo");
    p.origin.connect_all();
    p.frame = 0;
    for _ in 0..20 {
        p.tick();
    }
    let c = &p.edge.clients[v];
    assert!(
        c.video_in.len() > before + 10,
        "the edge viewer continues on the new publisher"
    );
    // One gapless sequence across the change, as at the origin.
    for w in c.video_seq.windows(2) {
        assert_eq!(w[1].0, w[0].1 + 1);
    }
}

#[test]
fn keyframes_whose_first_packet_comes_late_on_the_relay_reach_starting_and_replaying_viewers_whole()
{
    let mut p = Pair::new();
    p.filler = 5_000; // keyframes of several packets
    for _ in 0..10 {
        p.tick();
    }
    // A viewer waiting at a cold edge: the keyframe that starts it comes first-packet-last.
    p.subscribe_edge();
    p.hold_keyframe_starts = true;
    let waiting = p.edge.subscribe("127.0.0.3:1000", "demo");
    p.edge.connect_all();
    for _ in 0..45 {
        p.tick();
    }
    // A viewer joining a 1.8 s group replays it, and asks for a fresh keyframe, which comes
    // first-packet-last in the middle of the replay.
    let replaying = p.edge.subscribe("127.0.0.4:1000", "demo");
    p.edge.connect_all();
    for _ in 0..30 {
        p.tick();
    }
    assert!(
        p.keyframe_starts_held >= 2,
        "{} held",
        p.keyframe_starts_held
    );
    for v in [waiting, replaying] {
        let c = &p.edge.clients[v];
        let got: Vec<u32> = c.video_in.iter().map(|(f, _)| counter(f)).collect();
        let keyframes: Vec<u32> = c
            .video_in
            .iter()
            .filter(|(_, k)| *k)
            .map(|(f, _)| counter(f))
            .collect();
        eprintln!(
            "viewer {v}: frames {:?}..{:?} ({}), keyframes at {keyframes:?}",
            got.first(),
            got.last(),
            got.len()
        );
        assert!(got.len() > 20, "viewer {v}: {got:?}");
        assert!(
            c.video_in[0].1,
            "viewer {v} starts on a whole keyframe: {got:?}"
        );
        // One gapless sequence: nothing the viewer would wait for is missing.
        for w in c.video_seq.windows(2) {
            assert_eq!(w[1].0, w[0].1 + 1, "viewer {v}: sequence {:?}", c.video_seq);
        }
        // From the last keyframe on (the fresh one for the replaying viewer), every frame.
        let jump = c.video_in.iter().rposition(|(_, k)| *k).unwrap();
        let after = &got[jump..];
        let want: Vec<u32> = (after[0]..after[0] + after.len() as u32).collect();
        assert_eq!(after, want, "viewer {v}: every frame from its keyframe on");
    }
    let c = &p.edge.clients[replaying];
    assert!(
        c.video_in.iter().skip(1).any(|(_, k)| *k),
        "the replaying viewer jumped to the fresh keyframe"
    );
}

/// A stage's speaker detector hears the RFC 6464 audio level a publisher sends (browsers do,
/// OBS does not) on the packets a sink gets: each audio packet carries its own level, one
/// sent without the extension none, and the relay's wire bytes are the same either way.
#[test]
fn a_sink_gets_the_audio_level_each_packet_was_sent_with() {
    let mut p = Pair::new();
    p.tick();
    p.subscribe_edge();
    p.origin.relay_out.clear();
    for (i, level) in [Some(25u8), None, Some(90)].into_iter().enumerate() {
        let now = p.origin.now;
        let c = &mut p.origin.clients[p.publisher];
        let ticks = 100_000 + i as u64 * 960;
        match level {
            Some(l) => c.write_audio_level(now, ticks, vec![i as u8; 40], l),
            None => c.write(now, MediaKind::Audio, ticks, vec![i as u8; 40]),
        }
        p.origin.run_for(Duration::from_millis(20));
    }
    let audio: Vec<(Option<u8>, usize)> = p
        .origin
        .relay_out
        .iter()
        .filter(|r| r.track == sfu::AUDIO_TRACK)
        .map(|r| (r.level, r.data.len()))
        .collect();
    assert_eq!(
        audio,
        [(Some(25), 12 + 40), (None, 12 + 40), (Some(90), 12 + 40)],
        "levels as sent; plain RTP on the wire"
    );
}
