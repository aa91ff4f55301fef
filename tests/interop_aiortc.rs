//! End-to-end with an independent WebRTC implementation (aiortc): the real `aethex` binary on
//! loopback, a WHIP publisher and WHEP viewers decoding real VP8/H264 + Opus.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn assert_viewer_decoded(v: &Value) {
    assert_eq!(v["ok"], true, "viewer failed: {v}");
    assert!(
        v["video_frames"].as_u64().unwrap() >= 30,
        "too few video frames: {v}"
    );
    assert!(v["audio_frames"].as_u64().unwrap() > 0, "no audio: {v}");
    assert!(v["width"].as_u64().unwrap() > 0, "{v}");
}

/// The "done when": a VP8+Opus publisher using the key from `aethex channel create`,
/// sending keyframes only when asked, watched by three viewers that join 3 s later.
#[test]
fn vp8_opus_publisher_is_decoded_by_three_late_viewers() {
    let dir = temp_dir("vp8");
    let ch = create_channel(&dir, "show");
    let server = Server::start(&dir, &[]);
    let key = ch["stream_key"].as_str().unwrap();
    let publisher = publisher(&server, key, "vp8", 14);
    std::thread::sleep(Duration::from_secs(3));
    let viewers: Vec<Peer> = (0..3)
        .map(|i| viewer(&server, "show", &format!("viewer {i}"), 6))
        .collect();
    assert_eq!(
        server.wait_metric("aethex_subscribers", 3.0, Duration::from_secs(5)),
        3.0
    );
    for v in viewers {
        let result = v.result(Duration::from_secs(40));
        eprintln!("viewer: {result}");
        assert_viewer_decoded(&result);
    }
    let p = publisher.result(Duration::from_secs(40));
    eprintln!("publisher: {p}");
    assert_eq!(p["ok"], true, "{p}");
    // Keyframes only when asked: the encoder's own keyframes are its first one per build.
    assert_eq!(p["unforced_keyframes"], p["encoder_builds"], "{p}");
    assert!(
        p["forced_keyframes"].as_u64().unwrap() >= 1,
        "late viewers were served by a requested keyframe: {p}"
    );
    // DELETE from every peer frees everything.
    assert_eq!(
        server.wait_metric("aethex_publishers", 0.0, Duration::from_secs(5)),
        0.0
    );
    assert_eq!(
        server.wait_metric("aethex_subscribers", 0.0, Duration::from_secs(5)),
        0.0
    );
    assert!(server.stop().success(), "SIGTERM exits 0");
}

#[test]
fn h264_opus_publisher_is_decoded_by_two_viewers() {
    let dir = temp_dir("h264");
    let ch = create_channel(&dir, "cam");
    let server = Server::start(&dir, &[]);
    let publisher = publisher(&server, ch["stream_key"].as_str().unwrap(), "h264", 10);
    let viewers: Vec<Peer> = (0..2)
        .map(|i| viewer(&server, "cam", &format!("viewer {i}"), 5))
        .collect();
    for v in viewers {
        let result = v.result(Duration::from_secs(40));
        eprintln!("viewer: {result}");
        assert_viewer_decoded(&result);
    }
    let p = publisher.result(Duration::from_secs(40));
    assert_eq!(p["ok"], true, "{p}");
    assert_eq!(
        server.wait_metric("aethex_subscribers", 0.0, Duration::from_secs(5)),
        0.0
    );
    assert_eq!(
        server.wait_metric("aethex_publishers", 0.0, Duration::from_secs(5)),
        0.0
    );
    assert!(server.stop().success());
}

/// OBS reconnect: a second publish with the same key replaces the first; the viewer stays and
/// decodes the new publisher's media.
#[test]
fn republish_with_same_key_keeps_the_viewer_playing() {
    let dir = temp_dir("republish");
    let ch = create_channel(&dir, "obs");
    let server = Server::start(&dir, &[]);
    let key = ch["stream_key"].as_str().unwrap().to_string();
    let first = publisher(&server, &key, "vp8", 20);
    let v = viewer(&server, "obs", "viewer", 9);
    std::thread::sleep(Duration::from_secs(3));
    let second = publisher(&server, &key, "vp8", 8);
    let result = v.result(Duration::from_secs(40));
    eprintln!("viewer across republish: {result}");
    assert_viewer_decoded(&result);
    // The viewer decoded through the switch: no gap near the length of the remaining run.
    assert!(
        result["max_video_gap_ms"].as_f64().unwrap() < 2000.0,
        "{result}"
    );
    assert_eq!(second.result(Duration::from_secs(30))["ok"], true);
    drop(first);
    assert_eq!(
        server.wait_metric("aethex_publishers", 0.0, Duration::from_secs(5)),
        0.0
    );
    assert!(server.stop().success());
}

/// A WHEP viewer that offers only VP8 for an H264 stream gets a 400 codec_mismatch, not an
/// answer it cannot use.
#[test]
fn viewer_without_the_streams_codec_gets_codec_mismatch() {
    let dir = temp_dir("mismatch");
    let ch = create_channel(&dir, "h");
    let server = Server::start(&dir, &[]);
    let publisher = publisher(&server, ch["stream_key"].as_str().unwrap(), "h264", 8);
    let url = format!("{}/whep/h", server.base);
    let v = Peer::spawn(
        "vp8-only viewer",
        &["view", "--url", &url, "--duration", "3", "--codec", "vp8"].map(s),
    );
    let result = v.result(Duration::from_secs(30));
    assert_eq!(result["ok"], false, "{result}");
    let err = result["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("400") && err.contains("codec_mismatch"),
        "{result}"
    );
    assert_eq!(
        server.metric("aethex_subscribers"),
        0.0,
        "no session is left behind"
    );
    drop(publisher);
    assert!(server.stop().success());
}

/// A stage guest publishing with an invite (`aethex stage invite`) on `/whip/{channel}` joins
/// beside the host and never replaces it: the channel's viewers keep decoding the host's
/// pictures only, and revoking the invite ends the guest within the invite check's period
/// while the host stays live.
#[test]
fn a_stage_guest_joins_beside_the_host_and_is_ended_when_its_invite_is_revoked() {
    let dir = temp_dir("stage-guest");
    let ch = create_channel(&dir, "duo");
    let server = Server::start(&dir, &[]);
    let key = ch["stream_key"].as_str().unwrap();
    let host = publisher_sized(&server, key, "vp8", 20, (640, 360));
    let invite = cli(&dir, "stage", &["invite", "duo", "--name", "Ann"]);
    let token = invite["token"].as_str().unwrap();
    let url = format!("{}/whip/duo", server.base);
    let quieter = ["--volume", GUEST_VOLUME];
    let guest = publisher_with(&url, token, "vp8", 20, (320, 180), &quieter);
    assert_eq!(
        server.wait_metric("aethex_publishers", 2.0, Duration::from_secs(10)),
        2.0,
        "host and guest publish at once"
    );
    let v = viewer(&server, "duo", "viewer", 5);
    let result = v.result(Duration::from_secs(40));
    eprintln!("viewer of the host: {result}");
    assert_viewer_decoded(&result);
    let sizes = result["sizes"].as_object().unwrap();
    assert_eq!(
        sizes.keys().collect::<Vec<_>>(),
        ["640x360"],
        "only the host's pictures: the guest did not take the channel over: {result}"
    );
    let id = invite["id"].as_str().unwrap();
    cli(&dir, "stage", &["revoke", "duo", id]);
    assert_eq!(
        server.wait_metric("aethex_publishers", 1.0, Duration::from_secs(10)),
        1.0,
        "the revoked guest is ended, the host stays"
    );
    drop(guest);
    drop(host);
    assert!(server.stop().success());
}

/// Issue 15's "seeing each other" and multi-slot viewers, with independent peers: a host
/// (640x360, stream key) and two guests (320x180 and 480x270, invites from `aethex stage
/// invite`) publish; each co-streamer watches with its own credential and two video sections
/// and decodes the other two and never itself; a viewer with three sections decodes all three,
/// the host first.
#[test]
fn co_streamers_decode_each_other_never_themselves_and_a_three_section_viewer_decodes_all() {
    let dir = temp_dir("stage-watch");
    let ch = create_channel(&dir, "trio");
    let server = Server::start(&dir, &[]);
    let key = ch["stream_key"].as_str().unwrap();
    let host = publisher_sized(&server, key, "vp8", 30, (640, 360));
    let whip = format!("{}/whip/trio", server.base);
    let mut guests = Vec::new();
    for (name, size) in [("Ann", (320, 180)), ("Bob", (480, 270))] {
        let invite = cli(&dir, "stage", &["invite", "trio", "--name", name]);
        let token = invite["token"].as_str().unwrap().to_string();
        let id = invite["id"].as_str().unwrap().to_string();
        let quieter = ["--volume", GUEST_VOLUME];
        let p = publisher_with(&whip, &token, "vp8", 30, size, &quieter);
        guests.push((id, token, size, p));
    }
    assert_eq!(
        server.wait_metric("aethex_publishers", 3.0, Duration::from_secs(10)),
        3.0,
        "the host and both guests publish"
    );
    let whep = format!("{}/whep/trio", server.base);
    let sections = |n: &str| {
        vec![
            "--video-sections".to_string(),
            n.to_string(),
            "--audio-sections".to_string(),
            n.to_string(),
            "--min-frames-per-video-track".to_string(),
            "30".to_string(),
        ]
    };
    let watch = |name: &str, token: Option<&str>, n: &str| {
        let mut args = sections(n);
        if let Some(t) = token {
            args.extend(["--token".to_string(), t.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        viewer_at(&whep, name, 6, &args)
    };
    let ann = watch("Ann watching", Some(&guests[0].1), "2");
    let bob = watch("Bob watching", Some(&guests[1].1), "2");
    let the_host = watch("the host watching", Some(key), "2");
    let audience = watch("a three-section viewer", None, "3");
    // Four watching sessions, one of them audience: co-streamers are on the stage.
    server.wait_metric("aethex_subscribers", 4.0, Duration::from_secs(10));
    let count = || api(&server.base, "GET", "/api/channels/trio", None, None).1["viewers"].clone();
    let counted = until(Duration::from_secs(5), count, |v| *v == 1);
    assert!(counted.is_some(), "one viewer is counted: {}", count());
    let [ann, bob, the_host, audience] =
        [ann, bob, the_host, audience].map(|p| p.result(Duration::from_secs(40)));
    for (who, v) in [
        ("Ann", &ann),
        ("Bob", &bob),
        ("host", &the_host),
        ("audience", &audience),
    ] {
        eprintln!(
            "{who}: sections {:?}, g2g p50 {} p95 {} ms",
            section_sizes(v),
            v["g2g_ms_p50"],
            v["g2g_ms_p95"]
        );
        assert_eq!(v["ok"], true, "{who} decoded every section: {v}");
    }
    // Guests appear in invite-id order after the host.
    let mut by_id: Vec<&(String, String, (u32, u32), Peer)> = guests.iter().collect();
    by_id.sort_by(|a, b| a.0.cmp(&b.0));
    let size = |s: (u32, u32)| format!("{}x{}", s.0, s.1);
    let others_of = |me: usize| -> Vec<String> {
        let mut v = vec!["640x360".to_string()];
        v.extend(
            by_id
                .iter()
                .filter(|g| g.0 != guests[me].0)
                .map(|g| size(g.2)),
        );
        v
    };
    assert_eq!(
        section_sizes(&ann),
        others_of(0),
        "Ann sees the host and Bob, not herself"
    );
    assert_eq!(
        section_sizes(&bob),
        others_of(1),
        "Bob sees the host and Ann, not himself"
    );
    let guest_sizes: Vec<String> = by_id.iter().map(|g| size(g.2)).collect();
    assert_eq!(
        section_sizes(&the_host),
        guest_sizes,
        "the host sees its two guests"
    );
    let mut all = vec!["640x360".to_string()];
    all.extend(guest_sizes);
    assert_eq!(
        section_sizes(&audience),
        all,
        "a three-section viewer sees everyone"
    );
    drop(guests);
    drop(host);
    assert!(server.stop().success());
}

/// Issue 15's single-slot player: on a live stage a viewer with one video and one audio
/// section (any plain WHEP player) decodes a participant's video (the featured one) and the
/// server-side mix, in which the host's tone and both guests' tones are heard. A three-section
/// viewer beside it keeps every participant's own tracks.
#[test]
fn a_one_section_viewer_decodes_the_featured_video_and_a_mix_of_every_participant() {
    let dir = temp_dir("stage-mix");
    let ch = create_channel(&dir, "mixed");
    let server = Server::start(&dir, &[]);
    let key = ch["stream_key"].as_str().unwrap();
    let whip = format!("{}/whip/mixed", server.base);
    let (host, guests) = tone_stage(&dir, &whip, "mixed", key);
    assert_eq!(
        server.wait_metric("aethex_publishers", 3.0, Duration::from_secs(10)),
        3.0,
        "the host and both guests publish"
    );
    let whep = format!("{}/whep/mixed", server.base);
    let (single, all) = watch_stage(&whep);
    assert_watched_stage(&single, &all);
    drop(guests);
    drop(host);
    assert!(server.stop().success());
}

/// A guest who goes live after a viewer started is shown on the viewer's first free section
/// (the event watcher binds it), without a new offer.
#[test]
fn a_guest_going_live_later_appears_on_a_watching_viewers_free_section() {
    let dir = temp_dir("stage-late");
    let ch = create_channel(&dir, "late");
    let server = Server::start(&dir, &[]);
    let key = ch["stream_key"].as_str().unwrap();
    let host = publisher_sized(&server, key, "vp8", 30, (640, 360));
    let whep = format!("{}/whep/late", server.base);
    let watching = viewer_at(
        &whep,
        "a three-section viewer",
        8,
        &["--video-sections", "3", "--audio-sections", "3"],
    );
    std::thread::sleep(Duration::from_secs(2));
    let invite = cli(&dir, "stage", &["invite", "late", "--name", "Ann"]);
    let whip = format!("{}/whip/late", server.base);
    let guest = publisher_with(
        &whip,
        invite["token"].as_str().unwrap(),
        "vp8",
        30,
        (320, 180),
        &["--volume", GUEST_VOLUME],
    );
    let result = watching.result(Duration::from_secs(40));
    eprintln!("late join: sections {:?}", section_sizes(&result));
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(
        section_sizes(&result),
        ["640x360", "320x180", "-"],
        "the guest took the first free section: {result}"
    );
    drop(guest);
    drop(host);
    assert!(server.stop().success());
}

/// Host controls: the owner sees who is on the stage (`GET /api/channels/{name}/stage`), and
/// revoking a guest's invite takes it off the stage at once, its publish and its watching.
#[test]
fn the_owner_lists_the_stage_and_removing_a_guest_ends_it_at_once() {
    use serde_json::json;
    let dir = temp_dir("stage-controls");
    let server = Server::start(&dir, &[]);
    let (owner, key) = owned_channel(&server, "show");
    let host = publisher_sized(&server, &key, "vp8", 30, (640, 360));
    let (s, invite) = api(
        &server.base,
        "POST",
        "/api/channels/show/stage/invites",
        Some(&owner),
        Some(json!({"name": "Ann"})),
    );
    assert_eq!(s, 201, "{invite}");
    let (id, token) = (
        invite["id"].as_str().unwrap(),
        invite["token"].as_str().unwrap(),
    );
    let whip = format!("{}/whip/show", server.base);
    let guest = publisher_at(&whip, token, "vp8", 30, (320, 180));
    let watching = viewer_at(
        &format!("{}/whep/show", server.base),
        "Ann watching",
        20,
        &["--token", token],
    );
    server.wait_metric("aethex_subscribers", 1.0, Duration::from_secs(10));

    let stage = || {
        api(
            &server.base,
            "GET",
            "/api/channels/show/stage",
            Some(&owner),
            None,
        )
    };
    let (s, v) = stage();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["max_guests"], 5);
    // Who speaks and who is featured follow the tones; the rest is fixed.
    let fixed: Vec<Value> = v["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let keys = ["id", "role", "name", "live", "watching", "pinned", "muted"];
            keys.iter()
                .map(|k| (k.to_string(), p[*k].clone()))
                .collect()
        })
        .collect();
    let quiet = json!({"pinned": false, "muted": false});
    let with = |mut a: Value| {
        a.as_object_mut()
            .unwrap()
            .extend(quiet.as_object().unwrap().clone());
        a
    };
    assert_eq!(
        Value::from(fixed),
        json!([
            with(
                json!({"id": null, "role": "host", "name": "hostess", "live": true, "watching": false})
            ),
            with(json!({"id": id, "role": "guest", "name": "Ann", "live": true, "watching": true})),
        ]),
        "{v}"
    );
    let (s, v) = api(
        &server.base,
        "GET",
        "/api/channels/show/stage",
        Some(&register(&server.base, "nosy")),
        None,
    );
    assert_eq!(s, 403, "only the owner sees the stage: {v}");

    let (s, _) = api(
        &server.base,
        "DELETE",
        &format!("/api/channels/show/stage/invites/{id}"),
        Some(&owner),
        None,
    );
    assert_eq!(s, 204);
    // At once: both of Ann's sessions are closed before the answer, not by the 2 s invite
    // check (the gauges are read from the engine when scraped).
    assert_eq!(
        server.metric("aethex_publishers"),
        1.0,
        "Ann's publish ended"
    );
    assert_eq!(
        server.metric("aethex_subscribers"),
        0.0,
        "Ann's watching ended"
    );
    let (_, v) = stage();
    assert_eq!(
        v["participants"].as_array().unwrap().len(),
        1,
        "only the host is left: {v}"
    );
    drop(watching);
    drop(guest);
    drop(host);
    assert!(server.stop().success());
}

/// The owner's controls of a live stage, end to end: featuring a guest makes one-section viewers
/// see it instead of the active speaker; muting a guest takes it out of the mix and out of
/// forwarding (a three-section viewer no longer hears its own track); ending the stage revokes
/// every invite and takes every guest off at once while the host stays live.
#[test]
fn the_owner_features_a_guest_mutes_another_and_ends_the_stage() {
    use serde_json::json;
    let dir = temp_dir("stage-owner");
    let server = Server::start(&dir, &[]);
    let (owner, key) = owned_channel(&server, "panel");
    let whip = format!("{}/whip/panel", server.base);
    let host = publisher_with(&whip, &key, "vp8", 30, (640, 360), &["--tone", "440"]);
    let mut ids = Vec::new();
    let mut guests = Vec::new();
    for (name, size, tone) in [("Ann", (320, 180), "1200"), ("Bob", (480, 270), "2500")] {
        let (s, invite) = api(
            &server.base,
            "POST",
            "/api/channels/panel/stage/invites",
            Some(&owner),
            Some(json!({ "name": name })),
        );
        assert_eq!(s, 201, "{invite}");
        ids.push(invite["id"].as_str().unwrap().to_string());
        let token = invite["token"].as_str().unwrap();
        guests.push(publisher_with(
            &whip,
            token,
            "vp8",
            30,
            size,
            &["--tone", tone],
        ));
    }
    server.wait_metric("aethex_publishers", 3.0, Duration::from_secs(10));
    let control = |method: &str, path: &str, body: Value| {
        api(
            &server.base,
            method,
            &format!("/api/channels/panel/stage{path}"),
            Some(&owner),
            Some(body),
        )
    };
    // A participant must be live on the stage; only the owner may ask.
    let (s, v) = control("PUT", "/featured", json!({"participant": "nobody"}));
    assert_eq!(s, 404, "{v}");
    let nosy = register(&server.base, "nosy");
    let (s, _) = api(
        &server.base,
        "PUT",
        "/api/channels/panel/stage/featured",
        Some(&nosy),
        Some(json!({"participant": "host"})),
    );
    assert_eq!(s, 403);
    let (s, v) = control("PUT", "/featured", json!({"participant": ids[0]}));
    assert_eq!(s, 204, "{v}");
    let (s, v) = control(
        "POST",
        "/mute",
        json!({"participant": ids[1], "muted": true}),
    );
    assert_eq!(s, 204, "{v}");
    // The stage's driver applies them at its next review (every 100 ms).
    std::thread::sleep(Duration::from_millis(500));
    let whep = format!("{}/whep/panel", server.base);
    let (single, all) = watch_stage(&whep);
    let video = &tracks_of(&single, "video")[0];
    let audio = &tracks_of(&single, "audio")[0];
    eprintln!(
        "featured Ann, Bob muted: video {}, mix tone powers {}",
        video["sizes"], audio["tone_power"]
    );
    assert_eq!(single["ok"], true, "{single}");
    let frames = video["frames"].as_f64().unwrap();
    let ann = video["sizes"]["320x180"].as_f64().unwrap_or(0.0);
    assert!(
        ann >= 0.9 * frames,
        "the pinned guest is what a one-section viewer sees: {video}"
    );
    let power = |t: &str| audio["tone_power"][t].as_f64().unwrap_or(0.0);
    assert!(
        power("440") > 20.0 && power("1200") > 20.0,
        "host and Ann in the mix: {audio}"
    );
    assert!(power("2500") < 5.0, "muted Bob is not in the mix: {audio}");
    for t in tracks_of(&all, "audio") {
        let bob = t["tone_power"]["2500"].as_f64().unwrap_or(0.0);
        assert!(bob < 5.0, "no section carries muted Bob's audio: {t}");
    }
    // Slot 0 is the featured participant's: the pinned guest on the first section.
    let mut slots = section_sizes(&all);
    slots[1..].sort();
    assert_eq!(slots, ["320x180", "480x270", "640x360"], "{all}");
    let (s, v) = api(
        &server.base,
        "GET",
        "/api/channels/panel/stage",
        Some(&owner),
        None,
    );
    assert_eq!(s, 200, "{v}");
    let by_id = |id: &str| {
        v["participants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        (
            by_id(&ids[0])["featured"].clone(),
            by_id(&ids[0])["pinned"].clone()
        ),
        (json!(true), json!(true)),
        "{v}"
    );
    assert_eq!(by_id(&ids[1])["muted"], true, "{v}");
    // A viewer joining now: the pinned Ann on the first section pair, then the host, then Bob.
    let host_slot = v["participants"][0]["slot"].clone();
    assert_eq!(
        [
            by_id(&ids[0])["slot"].clone(),
            host_slot,
            by_id(&ids[1])["slot"].clone()
        ],
        [json!(0), json!(1), json!(2)],
        "{v}"
    );

    // Ending the stage: every guest off before the answer, every invite revoked.
    let (s, _) = api(
        &server.base,
        "DELETE",
        "/api/channels/panel/stage",
        Some(&owner),
        None,
    );
    assert_eq!(s, 204);
    assert_eq!(
        server.metric("aethex_publishers"),
        1.0,
        "only the host publishes"
    );
    let (_, v) = api(
        &server.base,
        "GET",
        "/api/channels/panel/stage/invites",
        Some(&owner),
        None,
    );
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["active"] == false),
        "{v}"
    );
    drop(guests);
    drop(host);
    assert!(server.stop().success());
}
