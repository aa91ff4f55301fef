//! Stage viewers in virtual time: one WHEP session watching several streams (a stage's
//! participants), each on its own video/audio section pair.
//!
//! What they prove: every section carries exactly one participant, whole and in order, with
//! its own continuous sequence numbers; a participant that leaves ends only its sections (the
//! session keeps the others); an offer with fewer sections than participants gets the first
//! ones; a keyframe request on a section reaches that section's publisher and no other.
#![allow(clippy::disallowed_methods)] // the test picks the virtual epoch from the clock once

use std::time::Duration;

use sfu::{Sections, StreamId};
use str0m::media::{KeyframeRequestKind, MediaKind};

mod support;
use support::*;

/// Frame counters of participant `tag` start at `tag * TAG`, so a frame tells whose it is.
const TAG: u32 = 100_000;

/// A participant's publisher: a keyframe first and whenever asked.
struct Participant {
    client: usize,
    tag: u32,
    frame: u32,
    ts: u64,
    answered: usize,
}

impl Participant {
    fn new(client: usize, tag: u32) -> Self {
        Self {
            client,
            tag,
            frame: 0,
            ts: 90_000,
            answered: 0,
        }
    }

    fn tick(&mut self, w: &mut World) {
        let c = &mut w.clients[self.client];
        let asked = c.keyframe_requests > self.answered;
        self.answered = c.keyframe_requests;
        let key = self.frame == 0 || asked;
        let n = self.tag * TAG + self.frame;
        c.write(w.now, MediaKind::Video, self.ts, vp8_frame(n, key, 300));
        let audio = vec![0xfc, self.tag as u8, (self.frame % 256) as u8, 7];
        c.write(w.now, MediaKind::Audio, self.ts * 48 / 90, audio);
        self.frame += 1;
        self.ts += 3000;
    }
}

/// Every participant sends `frames` frames, 33 ms apart.
fn run(w: &mut World, parts: &mut [Participant], frames: usize) {
    for _ in 0..frames {
        for p in parts.iter_mut() {
            p.tick(w);
        }
        w.run_for(Duration::from_millis(33));
    }
}

/// A host and two guests publishing, on streams `host`, `g1`, `g2`.
fn stage(w: &mut World) -> Vec<Participant> {
    let names = ["host", "g1", "g2"];
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let c = w.publish(&format!("127.0.0.{}:1000", i + 2), name);
            Participant::new(c, i as u32)
        })
        .collect()
}

/// The frames on a section all belong to `tag`, count up by one, and their sequence numbers
/// continue without a gap; returns how many there were.
fn one_participant_in_order(w: &World, viewer: usize, section: usize, tag: u32) -> usize {
    let c = &w.clients[viewer];
    let frames = c.frames_on(c.video_mids[section]);
    for (i, (data, seq)) in frames.iter().enumerate() {
        let n = counter(data);
        assert_eq!(
            n / TAG,
            tag,
            "section {section} frame {i} is participant {}'s",
            n / TAG
        );
        if i > 0 {
            let (prev, prev_seq) = &frames[i - 1];
            assert_eq!(
                n,
                counter(prev) + 1,
                "section {section}: frame {i} out of order"
            );
            assert_eq!(
                seq.0,
                prev_seq.1 + 1,
                "section {section}: sequence gap at frame {i}"
            );
        }
    }
    for (data, _) in c.frames_on(c.audio_mids[section]) {
        assert_eq!(
            data[1] as u32, tag,
            "audio section {section} carries another participant"
        );
    }
    frames.len()
}

#[test]
fn a_stage_viewer_gets_each_participant_whole_on_its_own_section() {
    let mut w = World::new();
    let mut parts = stage(&mut w);
    let v = w.subscribe_stage("127.0.0.9:1000", &["host", "g1", "g2"], 3);
    w.connect_all();
    run(&mut w, &mut parts, 60);

    for section in 0..3 {
        let got = one_participant_in_order(&w, v, section, section as u32);
        assert!(got >= 55, "section {section} got {got} of 60 frames");
        let c = &w.clients[v];
        let audio = c.frames_on(c.audio_mids[section]).len();
        assert!(
            audio >= 55,
            "audio section {section} got {audio} of 60 frames"
        );
    }
}

#[test]
fn an_offer_with_fewer_sections_than_participants_gets_the_first_and_extra_sections_stay_silent() {
    let mut w = World::new();
    let mut parts = stage(&mut w);
    let one = w.subscribe_stage("127.0.0.9:1000", &["host", "g1", "g2"], 1);
    // g2 is not live on this node: its section pair stays silent.
    let four = w.subscribe_stage("127.0.0.10:1000", &["g1", "nobody", "host"], 4);
    w.connect_all();
    run(&mut w, &mut parts, 40);

    assert!(
        one_participant_in_order(&w, one, 0, 0) >= 35,
        "the single section shows the host"
    );
    assert!(
        one_participant_in_order(&w, four, 0, 1) >= 35,
        "first live stream: g1"
    );
    assert!(
        one_participant_in_order(&w, four, 1, 0) >= 35,
        "next live stream: the host"
    );
    let c = &w.clients[four];
    for section in 2..4 {
        assert!(
            c.frames_on(c.video_mids[section]).is_empty(),
            "section {section} is unbound"
        );
    }
}

#[test]
fn a_participant_leaving_ends_its_sections_and_the_session_keeps_the_others() {
    let mut w = World::new();
    let mut parts = stage(&mut w);
    let v = w.subscribe_stage("127.0.0.9:1000", &["host", "g1", "g2"], 3);
    w.connect_all();
    run(&mut w, &mut parts, 20);
    let g1 = w.clients[parts[1].client].peer.unwrap();
    w.sfu.close(g1).unwrap();
    let mut staying: Vec<Participant> = parts.into_iter().filter(|p| p.tag != 1).collect();
    let before: Vec<usize> = (0..3)
        .map(|s| w.clients[v].frames_on(w.clients[v].video_mids[s]).len())
        .collect();
    // Past the offline grace (5 s): g1's stream is gone, the viewer is not.
    run(&mut w, &mut staying, 200);

    assert!(!w.sfu.is_live(&StreamId::new("g1").unwrap()));
    let c = &w.clients[v];
    assert_eq!(
        c.frames_on(c.video_mids[1]).len(),
        before[1],
        "nothing more on g1's section"
    );
    for (section, tag) in [(0, 0), (2, 2)] {
        let got = one_participant_in_order(&w, v, section, tag);
        assert!(
            got >= before[section] + 190,
            "section {section} kept going: {got}"
        );
    }
    // The host, g2 and the viewer are the sessions left.
    assert_eq!(w.sfu.peer_count(), 3);
    w.sfu.close(w.clients[v].peer.unwrap()).unwrap();
    assert_eq!(w.sfu.peer_count(), 2);
}

#[test]
fn a_keyframe_request_on_a_section_reaches_that_sections_publisher_only() {
    let mut w = World::new();
    let mut parts = stage(&mut w);
    let v = w.subscribe_stage("127.0.0.9:1000", &["host", "g1", "g2"], 3);
    w.connect_all();
    run(&mut w, &mut parts, 30);
    let asked: Vec<usize> = parts
        .iter()
        .map(|p| w.clients[p.client].keyframe_requests)
        .collect();
    let mid = w.clients[v].video_mids[2];
    w.clients[v]
        .rtc
        .direct_api()
        .stream_rx_by_mid(mid, None)
        .expect("a receive stream on section 2")
        .request_keyframe(KeyframeRequestKind::Pli);
    run(&mut w, &mut parts, 10);

    let now: Vec<usize> = parts
        .iter()
        .map(|p| w.clients[p.client].keyframe_requests)
        .collect();
    assert_eq!(now[0], asked[0], "the host was not asked");
    assert_eq!(now[1], asked[1], "g1 was not asked");
    assert!(now[2] > asked[2], "g2, shown on section 2, was asked");
}

#[test]
fn participants_arriving_later_take_the_first_free_section_and_numbering_goes_on() {
    let mut w = World::new();
    let host = w.publish("127.0.0.2:1000", "host");
    let mut parts = vec![Participant::new(host, 0)];
    let v = w.subscribe_stage("127.0.0.9:1000", &["host"], 3);
    let single = w.subscribe_stage("127.0.0.10:1000", &["host"], 1);
    w.connect_all();
    run(&mut w, &mut parts, 10);

    let g1 = w.publish("127.0.0.3:1000", "g1");
    w.connect_all();
    parts.push(Participant::new(g1, 1));
    let (vp, sp) = (w.clients[v].peer.unwrap(), w.clients[single].peer.unwrap());
    let g1_id = StreamId::new("g1").unwrap();
    assert!(
        w.sfu.bind(vp, &g1_id, Sections::Both).unwrap(),
        "g1 is shown on a free section"
    );
    assert!(
        !w.sfu.bind(vp, &g1_id, Sections::Both).unwrap(),
        "never twice"
    );
    assert!(
        !w.sfu.bind(sp, &g1_id, Sections::Both).unwrap(),
        "a one-section viewer has no free section"
    );
    run(&mut w, &mut parts, 30);
    assert!(
        one_participant_in_order(&w, v, 1, 1) >= 25,
        "g1 on section 1"
    );
    assert_eq!(
        one_participant_in_order(&w, single, 0, 0),
        40,
        "the host only"
    );

    // g1 leaves; past the grace its section is free, and g2 takes it.
    w.sfu.close(w.clients[g1].peer.unwrap()).unwrap();
    parts.retain(|p| p.tag != 1);
    run(&mut w, &mut parts, 170);
    let g2 = w.publish("127.0.0.4:1000", "g2");
    w.connect_all();
    parts.push(Participant::new(g2, 2));
    let g1_frames = w.clients[v].frames_on(w.clients[v].video_mids[1]).len();
    let g1_last = w.clients[v].frames_on(w.clients[v].video_mids[1])[g1_frames - 1].1;
    assert!(w
        .sfu
        .bind(vp, &StreamId::new("g2").unwrap(), Sections::Both)
        .unwrap());
    run(&mut w, &mut parts, 30);
    let c = &w.clients[v];
    let section = c.frames_on(c.video_mids[1]);
    let (first_of_g2, seq) = section[g1_frames..]
        .iter()
        .map(|(d, s)| (counter(d), *s))
        .next()
        .expect("g2 shown on section 1");
    assert_eq!(first_of_g2 / TAG, 2, "g2 on g1's old section");
    assert_eq!(
        seq.0,
        g1_last.1 + 1,
        "the section's numbering goes on across participants"
    );
    assert!(
        c.frames_on(c.video_mids[2]).is_empty(),
        "section 2 stays free"
    );
    // The stage map: who is on which section, in offer order.
    let shown: Vec<(String, Option<String>, Option<String>)> = w
        .sfu
        .shown(vp)
        .unwrap()
        .into_iter()
        .map(|s| (s.stream.to_string(), s.video, s.audio))
        .collect();
    let mid = |m: str0m::media::Mid| Some(m.to_string());
    assert_eq!(
        shown,
        [
            ("host".into(), mid(c.video_mids[0]), mid(c.audio_mids[0])),
            ("g2".into(), mid(c.video_mids[1]), mid(c.audio_mids[1])),
        ]
    );
}

/// A one-section viewer's featured switch (a stage's active speaker changed): its video section
/// is rebound from the host to a guest at once. The guest's picture starts on a keyframe (from
/// its cache), the section's sequence numbers go on without a gap, no frame of the host follows
/// a frame of the guest, and the audio section, let go for the mix, carries no one.
#[test]
fn a_one_section_viewer_switches_to_the_featured_participant_on_a_keyframe_without_a_gap() {
    let mut w = World::new();
    let host = w.publish("127.0.0.2:1000", "host");
    let g1 = w.publish("127.0.0.3:1000", "g1");
    let mut parts = vec![Participant::new(host, 0), Participant::new(g1, 1)];
    let single = w.subscribe_stage("127.0.0.10:1000", &["host"], 1);
    w.connect_all();
    run(&mut w, &mut parts, 20);
    let sp = w.clients[single].peer.unwrap();
    let (host_id, g1_id) = (StreamId::new("host").unwrap(), StreamId::new("g1").unwrap());
    let before = {
        let c = &w.clients[single];
        (
            c.frames_on(c.video_mids[0]).len(),
            c.frames_on(c.audio_mids[0]).len(),
        )
    };
    assert!(before.0 >= 15, "the host was shown first: {before:?}");
    assert!(w
        .sfu
        .rebind(sp, Some(&host_id), &g1_id, Sections::Video)
        .unwrap());
    assert!(
        !w.sfu
            .rebind(
                sp,
                Some(&g1_id),
                &StreamId::new("nobody").unwrap(),
                Sections::Video
            )
            .unwrap(),
        "a stream that is not live changes nothing"
    );
    run(&mut w, &mut parts, 20);
    let c = &w.clients[single];
    let frames = c.frames_on(c.video_mids[0]);
    let first_g1 = frames
        .iter()
        .position(|(d, _)| counter(d) / TAG == 1)
        .expect("the guest is shown");
    assert_eq!(first_g1, before.0, "the switch follows the last host frame");
    assert!(
        frames[first_g1..]
            .iter()
            .all(|(d, _)| counter(d) / TAG == 1),
        "no host frame after the switch"
    );
    assert_eq!(
        frames[first_g1].0[0] & 1,
        0,
        "the guest's first frame is a keyframe"
    );
    assert_eq!(
        frames[first_g1].1 .0,
        frames[first_g1 - 1].1 .1 + 1,
        "the section's numbering goes on across the switch"
    );
    assert!(
        frames.len() - first_g1 >= 15,
        "the guest plays at once (from its cache): {} frames",
        frames.len() - first_g1
    );
    let audio_after = c.frames_on(c.audio_mids[0]).len() - before.1;
    assert!(
        audio_after <= 2,
        "the audio section, let go for the mix, carries no one: {audio_after}"
    );
    let shown = w.sfu.shown(sp).unwrap();
    assert_eq!(shown.len(), 1);
    assert_eq!(
        (shown[0].stream.as_str(), shown[0].audio.is_none()),
        ("g1", true)
    );
}

/// Slot 0 for a K-section viewer (docs/costreaming.md, "Slots"): when a guest is featured the
/// stage's driver frees the first section pair and the guest's, then binds the guest first and
/// the old first participant second. Exactly those two sections change, each to the other's
/// participant, starting on a keyframe with its numbering going on; the third section keeps
/// its participant throughout.
#[test]
fn featuring_a_guest_swaps_the_first_section_with_the_guests_and_no_other() {
    let mut w = World::new();
    let mut parts = stage(&mut w);
    let v = w.subscribe_stage("127.0.0.9:1000", &["host", "g1", "g2"], 3);
    w.connect_all();
    run(&mut w, &mut parts, 30);
    let vp = w.clients[v].peer.unwrap();
    let id = |n: &str| StreamId::new(n).unwrap();
    let before: Vec<usize> = (0..3)
        .map(|s| w.clients[v].frames_on(w.clients[v].video_mids[s]).len())
        .collect();

    // g2 featured: sections 0 (host) and 2 (g2) are freed, g2 takes the first, the host the
    // next free one.
    assert!(w.sfu.unbind(vp, &id("host")).unwrap());
    assert!(w.sfu.unbind(vp, &id("g2")).unwrap());
    assert!(w.sfu.bind(vp, &id("g2"), Sections::Both).unwrap());
    assert!(w.sfu.bind(vp, &id("host"), Sections::Both).unwrap());
    run(&mut w, &mut parts, 30);

    let c = &w.clients[v];
    let shown: Vec<String> = w
        .sfu
        .shown(vp)
        .unwrap()
        .into_iter()
        .map(|s| s.stream.to_string())
        .collect();
    assert_eq!(shown, ["g2", "g1", "host"], "two sections swapped");
    for (section, from, to) in [(0, 0, 2), (2, 2, 0)] {
        let frames = c.frames_on(c.video_mids[section]);
        let (old, new) = frames.split_at(before[section]);
        assert!(old.iter().all(|(d, _)| counter(d) / TAG == from));
        assert!(
            new.len() >= 25,
            "section {section} plays its new participant at once: {} frames",
            new.len()
        );
        assert!(
            new.iter().all(|(d, _)| counter(d) / TAG == to),
            "section {section} shows participant {to} only after the swap"
        );
        assert_eq!(
            new[0].0[0] & 1,
            0,
            "section {section} restarts on a keyframe"
        );
        assert_eq!(
            new[0].1 .0,
            old[old.len() - 1].1 .1 + 1,
            "section {section}: numbering goes on"
        );
    }
    let g1 = one_participant_in_order(&w, v, 1, 1);
    assert!(g1 >= 55, "g1 keeps its section, whole: {g1} of 60 frames");
}
