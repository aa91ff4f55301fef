//! Codec negotiation across implementations that number things differently: each rule of
//! `sfu::negotiate` proved with real str0m peers (configured with other payload types and
//! header-extension ids) or with the exact offers other stacks send.
//!
//! - a viewer gets the publisher's video and audio under its own payload types;
//! - RTX and RED are mapped by what they carry (`apt`, the RED block's payload);
//! - header-extension ids are the viewer's own (the audio level arrives under its id);
//! - OBS's offer is answered with OBS's own payload types;
//! - an H.264 profile mismatch and a codec without overlap are `CodecMismatch` naming both sides;
//! - the audio section of a video-only stream stays bundled with the viewer's Opus and no
//!   media; a section without any known format is rejected with its own format, not a bare `0`;
//! - no answer ever lists a payload type without its `a=rtpmap` (property test).
#![allow(clippy::disallowed_methods)] // the test picks the virtual epoch from the clock once

use std::time::Duration;

use media_core::sdp_codecs::unmapped_payload_types;
use proptest::prelude::*;
use sfu::{DropReason, SfuError, StreamId};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind};
use str0m::rtp::Extension;
use str0m::{Rtc, RtcConfig};

mod support;
use support::*;

/// An engine that sends/receives VP8 at `vp8` (RTX `vp8 + 1`) and Opus at `opus`.
fn numbered(vp8: u8, opus: u8) -> RtcConfig {
    let mut c = Rtc::builder().clear_codecs();
    let codecs = c.codec_config();
    codecs.add_config(
        vp8.into(),
        Some((vp8 + 1).into()),
        Codec::Vp8,
        Frequency::NINETY_KHZ,
        None,
        FormatParams::default(),
    );
    codecs.add_config(
        opus.into(),
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams {
            min_p_time: Some(10),
            use_inband_fec: Some(true),
            ..Default::default()
        },
    );
    c
}

/// Publish `frames` VP8 frames (a keyframe first) with Opus beside, 33 ms apart.
fn send(w: &mut World, publisher: usize, frames: u32) {
    for i in 0..frames {
        let now = w.now;
        let c = &mut w.clients[publisher];
        c.write(
            now,
            MediaKind::Video,
            90_000 + 3000 * i as u64,
            vp8_frame(i, i == 0, 400),
        );
        let mid = c.audio.unwrap();
        let writer = c.rtc.writer(mid).unwrap().audio_level(-30, true);
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .unwrap()
            .pt();
        let time =
            str0m::media::MediaTime::new(48_000 + 1600 * i as u64, Frequency::FORTY_EIGHT_KHZ);
        writer
            .write(pt, now, time, vec![0xfc, i as u8, 1, 2])
            .unwrap();
        w.run_for(Duration::from_millis(33));
    }
}

/// A world with a publisher and a viewer of stream `demo`, each with its own engine setup.
fn pair(publisher: RtcConfig, viewer: RtcConfig) -> (World, usize, usize) {
    let mut w = World::new();
    let now = w.now;
    let p = w.publish_client(
        Client::with_config(now, "127.0.0.2:1000", publisher),
        "demo",
        &[],
    );
    let v = w.subscribe_client(
        Client::with_config(now, "127.0.0.3:1000", viewer),
        "demo",
        Default::default(),
    );
    (w, p, v)
}

fn has_line(sdp: &str, line: &str) -> bool {
    sdp.lines().any(|l| l.trim_end() == line)
}

#[test]
fn a_viewer_gets_the_publishers_media_under_its_own_payload_types() {
    let (mut w, p, v) = pair(numbered(120, 109), numbered(96, 111));
    w.connect_all();
    send(&mut w, p, 40);

    let viewer = &w.clients[v];
    assert!(
        has_line(&viewer.answer, "a=rtpmap:96 VP8/90000"),
        "{}",
        viewer.answer
    );
    assert!(
        has_line(&viewer.answer, "a=rtpmap:111 opus/48000/2"),
        "{}",
        viewer.answer
    );
    assert!(!viewer.answer.contains(":120 ") && !viewer.answer.contains(":109 "));
    assert!(
        viewer.video_in.len() >= 35,
        "{} of 40 frames",
        viewer.video_in.len()
    );
    assert!(
        viewer.video_pts.iter().all(|pt| *pt == 96),
        "{:?}",
        viewer.video_pts
    );
    assert!(
        viewer.audio_in.len() >= 35,
        "{} audio frames",
        viewer.audio_in.len()
    );
    assert_eq!(w.sfu.stats().drops_for(DropReason::UnknownPayloadType), 0);
}

#[test]
fn rtx_is_mapped_by_its_apt_and_repairs_loss_under_the_viewers_numbers() {
    let (mut w, p, v) = pair(numbered(100, 109), numbered(45, 111));
    let addr = w.clients[v].addr;
    w.links.insert(addr, Link::lossy(0.05, 7));
    w.connect_all();
    let published = w.clients[p].rtc.codec_config().params().to_vec();
    assert!(published
        .iter()
        .any(|x| *x.pt() == 100 && x.resend().map(|r| *r) == Some(101)));
    assert!(
        has_line(&w.clients[v].answer, "a=fmtp:46 apt=45"),
        "{}",
        w.clients[v].answer
    );
    send(&mut w, p, 90);
    w.run_for(Duration::from_millis(500));
    let viewer = &w.clients[v];
    // 5 % loss on the viewer's link: NACK + RTX (payload type 46) fill the gaps.
    assert!(
        viewer.video_in.len() >= 85,
        "{} of 90 frames",
        viewer.video_in.len()
    );
    assert!(w.links[&addr].dropped > 0, "the link lost packets");
}

#[test]
fn the_audio_level_arrives_under_the_viewers_own_extension_id() {
    let publisher = numbered(96, 111)
        .clear_extension_map()
        .set_extension(9, Extension::AudioLevel)
        .set_extension(3, Extension::TransportSequenceNumber)
        .set_extension(4, Extension::RtpMid);
    let viewer = numbered(96, 111)
        .clear_extension_map()
        .set_extension(14, Extension::AudioLevel)
        .set_extension(5, Extension::TransportSequenceNumber)
        .set_extension(6, Extension::RtpMid);
    let (mut w, p, v) = pair(publisher, viewer);
    assert!(
        w.clients[v]
            .answer
            .contains("a=extmap:14 urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
        "{}",
        w.clients[v].answer
    );
    w.connect_all();
    send(&mut w, p, 20);
    let levels = &w.clients[v].audio_levels;
    assert!(levels.len() >= 15, "{} audio frames", levels.len());
    assert!(levels.iter().all(|l| *l == Some(-30)), "{levels:?}");
}

/// OBS 30/31's WHIP offer (whip-output.cpp), as libdatachannel writes it: no candidates.
const OBS_OFFER: &str = "v=0\r\no=rtc 2890844526 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\na=group:LS 0 1\r\na=msid-semantic:WMS *\r\na=ice-options:ice2,trickle\r\n\
a=fingerprint:sha-256 0F:74:31:25:CB:A2:13:EC:28:6F:6D:2C:61:FF:5D:C2:BC:B9:DB:3D:98:14:8D:1A:BB:EA:33:0C:A4:60:A8:8E\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
a=ssrc:1111 cname:obs\r\na=msid:obs audio\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1\r\n\
a=setup:actpass\r\na=ice-ufrag:obsU\r\na=ice-pwd:obsPasswordObsPassword12\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n\
a=ssrc:2222 cname:obs\r\na=msid:obs video\r\na=rtcp-mux\r\na=rtpmap:96 H264/90000\r\n\
a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 goog-remb\r\n\
a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1\r\n\
a=setup:actpass\r\na=ice-ufrag:obsU\r\na=ice-pwd:obsPasswordObsPassword12\r\n";

#[test]
fn obs_is_answered_with_its_own_payload_types() {
    let mut w = World::new();
    let published = w
        .sfu
        .publish(w.now, StreamId::new("obs").unwrap(), OBS_OFFER)
        .unwrap();
    let a = &published.answer;
    assert!(has_line(a, "m=audio 9 UDP/TLS/RTP/SAVPF 111"), "{a}");
    assert!(has_line(a, "m=video 9 UDP/TLS/RTP/SAVPF 96"), "{a}");
    assert!(has_line(a, "a=rtpmap:96 H264/90000"), "{a}");
    assert!(a.contains("profile-level-id=42e01f"), "{a}");
    assert_eq!(
        a.matches("a=rtpmap:").count(),
        2,
        "only what OBS offered: {a}"
    );
    assert!(unmapped_payload_types(a).is_empty());
}

/// A WHEP offer (recvonly video, and audio when `audio`) with these video formats.
fn viewer_offer(video: &[(u8, &str, &str)], audio: bool) -> String {
    let bundle = if audio { "0 1" } else { "0" };
    let mut s = format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {bundle}\r\n\
a=fingerprint:sha-256 0F:74:31:25:CB:A2:13:EC:28:6F:6D:2C:61:FF:5D:C2:BC:B9:DB:3D:98:14:8D:1A:BB:EA:33:0C:A4:60:A8:8E\r\n",
    );
    let pts: Vec<String> = video.iter().map(|v| v.0.to_string()).collect();
    s.push_str(&format!("m=video 9 UDP/TLS/RTP/SAVPF {}\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\n", pts.join(" ")));
    s.push_str("a=setup:actpass\r\na=ice-ufrag:vwU1\r\na=ice-pwd:viewerPasswordViewer123\r\n");
    for (pt, map, fmtp) in video {
        s.push_str(&format!("a=rtpmap:{pt} {map}\r\n"));
        if !fmtp.is_empty() {
            s.push_str(&format!("a=fmtp:{pt} {fmtp}\r\n"));
        }
    }
    if audio {
        s.push_str("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\na=rtcp-mux\r\n\
a=setup:actpass\r\na=ice-ufrag:vwU1\r\na=ice-pwd:viewerPasswordViewer123\r\na=rtpmap:111 opus/48000/2\r\n");
    }
    s
}

#[test]
fn red_keeps_the_publishers_numbers_and_takes_the_viewers() {
    let mut w = World::new();
    // A publisher numbering Opus 109 and its RED 120 (RFC 2198, `120 109/109`).
    let offer = OBS_OFFER
        .replace(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "m=audio 9 UDP/TLS/RTP/SAVPF 120 109",
        )
        .replace(
            "a=rtpmap:111 opus/48000/2\r\n",
            "a=rtpmap:120 red/48000/2\r\na=fmtp:120 109/109\r\na=rtpmap:109 opus/48000/2\r\n",
        )
        .replace("a=fmtp:111 ", "a=fmtp:109 ");
    let published = w
        .sfu
        .publish(w.now, StreamId::new("red").unwrap(), &offer)
        .unwrap();
    let a = &published.answer;
    assert!(has_line(a, "a=rtpmap:120 red/48000/2"), "{a}");
    assert!(has_line(a, "a=rtpmap:109 opus/48000/2"), "{a}");
    assert!(has_line(a, "a=fmtp:120 109/109"), "{a}");
    // A viewer numbering Opus 111 and RED 63 gets both under its own numbers.
    let viewer = viewer_offer(
        &[(
            102,
            "H264/90000",
            "profile-level-id=42e01f;packetization-mode=1",
        )],
        true,
    )
    .replace(
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "m=audio 9 UDP/TLS/RTP/SAVPF 63 111",
    )
    .replace(
        "a=rtpmap:111 opus/48000/2\r\n",
        "a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\na=rtpmap:111 opus/48000/2\r\n",
    );
    let answer = w
        .sfu
        .subscribe(w.now, StreamId::new("red").unwrap(), &viewer)
        .unwrap()
        .answer;
    assert!(has_line(&answer, "a=rtpmap:63 red/48000/2"), "{answer}");
    assert!(has_line(&answer, "a=rtpmap:111 opus/48000/2"), "{answer}");
    assert!(has_line(&answer, "a=rtpmap:102 H264/90000"), "{answer}");
    assert!(
        !answer.contains(":109 ") && !answer.contains(":120 "),
        "{answer}"
    );
    assert!(unmapped_payload_types(&answer).is_empty(), "{answer}");
}

#[test]
fn an_h264_profile_mismatch_is_refused_naming_both_profiles() {
    let mut w = World::new();
    w.sfu
        .publish(w.now, StreamId::new("obs").unwrap(), OBS_OFFER)
        .unwrap();
    // Baseline (42 00) is not Constrained Baseline (42 e0): only the level may differ.
    let offer = viewer_offer(
        &[(
            102,
            "H264/90000",
            "profile-level-id=42001f;packetization-mode=1",
        )],
        true,
    );
    let err = w
        .sfu
        .subscribe(w.now, StreamId::new("obs").unwrap(), &offer)
        .unwrap_err();
    let SfuError::CodecMismatch(why) = err else {
        panic!("{err:?}")
    };
    assert!(why.contains("42e01f") && why.contains("42001f"), "{why}");
    // The same profile at another level and number is fine.
    let offer = viewer_offer(
        &[(
            127,
            "H264/90000",
            "profile-level-id=42e034;packetization-mode=1",
        )],
        true,
    );
    let ok = w
        .sfu
        .subscribe(w.now, StreamId::new("obs").unwrap(), &offer)
        .unwrap();
    assert!(
        has_line(&ok.answer, "a=rtpmap:127 H264/90000"),
        "{}",
        ok.answer
    );
}

#[test]
fn no_codec_overlap_is_refused_naming_the_codecs() {
    let mut w = World::new();
    let now = w.now;
    w.publish_client(
        Client::with_config(now, "127.0.0.2:1000", numbered(96, 111)),
        "demo",
        &[],
    );
    let offer = viewer_offer(
        &[(98, "VP9/90000", "profile-id=0"), (35, "AV1/90000", "")],
        false,
    );
    let err = w
        .sfu
        .subscribe(w.now, StreamId::new("demo").unwrap(), &offer)
        .unwrap_err();
    let SfuError::CodecMismatch(why) = err else {
        panic!("{err:?}")
    };
    assert!(
        why.contains("VP8") && why.contains("VP9") && why.contains("AV1"),
        "{why}"
    );
}

/// A video-only stream (the publisher offers no audio section) on stream `name`.
fn publish_video_only(w: &mut World, addr: &str, name: &str) -> usize {
    let now = w.now;
    let mut c = Client::new(now, addr);
    let mut api = c.rtc.sdp_api();
    let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    c.video = Some(mid);
    let published = w
        .sfu
        .publish(now, StreamId::new(name).unwrap(), &offer.to_sdp_string())
        .unwrap();
    c.accept(pending, &published.answer);
    w.index.insert(c.addr, w.clients.len());
    w.clients.push(c);
    w.clients.len() - 1
}

#[test]
fn the_audio_section_of_a_video_only_stream_stays_in_the_bundle_without_media() {
    let mut w = World::new();
    let p = publish_video_only(&mut w, "127.0.0.2:1000", "mute");
    let v = w.subscribe("127.0.0.3:1000", "mute");
    let answer = w.clients[v].answer.clone();
    let audio = answer
        .split("m=")
        .find(|s| s.starts_with("audio"))
        .expect("an audio section");
    // Not rejected (aiortc opens a separate transport for a section outside the bundle), and
    // with the viewer's own Opus, never a bare payload type.
    assert!(audio.starts_with("audio 9 "), "{answer}");
    assert!(audio.contains("a=rtpmap:111 opus/48000/2"), "{answer}");
    assert!(
        audio.contains("a=inactive") && !audio.contains("a=sendonly"),
        "{answer}"
    );
    let bundle = answer
        .lines()
        .find(|l| l.starts_with("a=group:BUNDLE"))
        .unwrap();
    assert_eq!(
        bundle.split_whitespace().count(),
        3,
        "both mids bundled: {bundle}"
    );
    assert!(unmapped_payload_types(&answer).is_empty(), "{answer}");
    w.connect_all();
    for i in 0..20 {
        let now = w.now;
        w.clients[p].write(
            now,
            MediaKind::Video,
            3000 * i,
            vp8_frame(i as u32, i == 0, 300),
        );
        w.run_for(Duration::from_millis(33));
    }
    assert!(
        w.clients[v].video_in.len() >= 15,
        "{}",
        w.clients[v].video_in.len()
    );
    assert!(w.clients[v].audio_in.is_empty());
}

#[test]
fn a_section_the_stream_cannot_fill_and_without_a_known_format_is_rejected_with_its_format() {
    let mut w = World::new();
    publish_video_only(&mut w, "127.0.0.2:1000", "mute");
    let offer = viewer_offer(&[(96, "VP8/90000", "")], true)
        .replace(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "m=audio 9 UDP/TLS/RTP/SAVPF 9",
        )
        .replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:9 G722/8000");
    let answer = w
        .sfu
        .subscribe(w.now, StreamId::new("mute").unwrap(), &offer)
        .unwrap()
        .answer;
    let audio = answer
        .split("m=")
        .find(|s| s.starts_with("audio"))
        .expect("an audio section");
    assert!(
        audio.starts_with("audio 0 UDP/TLS/RTP/SAVPF 9\r\n"),
        "{answer}"
    );
    assert!(audio.contains("a=rtpmap:9 G722/8000"), "{answer}");
    assert!(has_line(&answer, "a=group:BUNDLE 0"), "{answer}");
    assert!(unmapped_payload_types(&answer).is_empty(), "{answer}");
}

/// A publisher offer with VP8 and/or H.264 (constrained baseline) video under these numbers,
/// and Opus.
fn publisher_offer(vp8: Option<u8>, h264: Option<u8>, opus: u8) -> String {
    let mut c = Rtc::builder().clear_codecs();
    let codecs = c.codec_config();
    if let Some(pt) = vp8 {
        codecs.add_config(
            pt.into(),
            None,
            Codec::Vp8,
            Frequency::NINETY_KHZ,
            None,
            FormatParams::default(),
        );
    }
    if let Some(pt) = h264 {
        codecs.add_h264(pt.into(), None, true, 0x42e01f);
    }
    codecs.add_config(
        opus.into(),
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams::default(),
    );
    let mut rtc = c.build(std::time::Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.apply().unwrap().0.to_sdp_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Whatever the numbers on both sides, an answer is either refused with a codec error or
    /// maps every payload type it lists, and a viewer sharing a codec is never refused.
    #[test]
    fn no_answer_lists_a_payload_type_without_rtpmap(
        pub_vp8 in proptest::option::of(96u8..=100), pub_h264 in proptest::option::of(101u8..=110),
        pub_opus in 111u8..=115, view_vp8 in proptest::option::of(116u8..=118),
        view_h264 in proptest::option::of(119u8..=125), audio in any::<bool>(),
    ) {
        prop_assume!(pub_vp8.is_some() || pub_h264.is_some());
        let mut w = World::new();
        let published = w.sfu.publish(w.now, StreamId::new("p").unwrap(), &publisher_offer(pub_vp8, pub_h264, pub_opus)).unwrap();
        prop_assert!(unmapped_payload_types(&published.answer).is_empty(), "{}", published.answer);
        let mut video = Vec::new();
        if let Some(pt) = view_vp8 { video.push((pt, "VP8/90000", "")); }
        if let Some(pt) = view_h264 { video.push((pt, "H264/90000", "profile-level-id=42e01f;packetization-mode=1")); }
        prop_assume!(!video.is_empty());
        let offer = viewer_offer(&video, audio);
        let shared = (pub_vp8.is_some() && view_vp8.is_some()) || (pub_h264.is_some() && view_h264.is_some());
        match w.sfu.subscribe(w.now, StreamId::new("p").unwrap(), &offer) {
            Ok(s) => {
                prop_assert!(shared);
                prop_assert!(unmapped_payload_types(&s.answer).is_empty(), "{}", s.answer);
            }
            Err(SfuError::CodecMismatch(_)) => prop_assert!(!shared),
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }
}
