//! The HTTP surface of the real binary: WHIP/WHEP resources, every error case with its status
//! and JSON code, CORS, metrics, the CLI's config commands.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use reqwest::blocking::Response;
use reqwest::StatusCode;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

/// A real WHIP offer (sendonly video + audio) from str0m, optionally with only one H264 profile.
fn offer(h264_profile: Option<u32>) -> String {
    let mut b = Rtc::builder();
    if let Some(profile) = h264_profile {
        b = b.clear_codecs().enable_opus(true, false);
        b.codec_config()
            .add_h264(96.into(), Some(97.into()), true, profile);
    }
    let mut rtc = b.build(Instant::now());
    rtc.add_local_candidate(Candidate::host("127.0.0.1:40000".parse().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, _pending) = api.apply().unwrap();
    offer.to_sdp_string()
}

fn viewer_offer() -> String {
    let mut rtc = Rtc::builder().build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    api.apply().unwrap().0.to_sdp_string()
}

const SDP: &str = "application/sdp";

fn post(url: &str, ctype: &str, key: Option<&str>, body: String) -> Response {
    let mut req = http().post(url).header("content-type", ctype).body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().unwrap()
}

/// Status and JSON `code` of an error response.
fn expect_error(resp: Response, status: StatusCode, code: &str) {
    assert_eq!(resp.status(), status);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: serde_json::Value = resp.json().expect("JSON error body");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
}

fn setup(tag: &str) -> (Server, String) {
    let dir = temp_dir(tag);
    let ch = create_channel(&dir, "alpha");
    create_channel(&dir, "beta");
    let server = Server::start(&dir, &[]);
    (server, ch["stream_key"].as_str().unwrap().to_string())
}

#[test]
fn whip_bad_requests_get_4xx_with_json_codes() {
    let (server, key) = setup("whip-errors");
    let whip = format!("{}/whip", server.base);
    expect_error(
        post(&whip, "application/sdp", Some(&key), "garbage".into()),
        StatusCode::BAD_REQUEST,
        "bad_sdp",
    );
    let no_media = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n".to_string();
    expect_error(
        post(&whip, "application/sdp", Some(&key), no_media),
        StatusCode::BAD_REQUEST,
        "bad_sdp",
    );
    expect_error(
        post(&whip, "text/plain", Some(&key), offer(None)),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    expect_error(
        post(&whip, "application/sdp", None, offer(None)),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    expect_error(
        post(&whip, "application/sdp", Some("sk_wrong"), offer(None)),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let basic = http()
        .post(&whip)
        .header("content-type", "application/sdp")
        .header("authorization", "Basic abc")
        .body(offer(None))
        .send()
        .unwrap();
    expect_error(basic, StatusCode::UNAUTHORIZED, "unauthorized");
    let big = format!("{}{}", offer(None), "a=x\r\n".repeat(20_000));
    expect_error(
        post(&whip, "application/sdp", Some(&key), big),
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    );
    // Per-channel form: unknown channel 404, someone else's key 401.
    expect_error(
        post(
            &format!("{whip}/nope"),
            "application/sdp",
            Some(&key),
            offer(None),
        ),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    expect_error(
        post(
            &format!("{whip}/beta"),
            "application/sdp",
            Some(&key),
            offer(None),
        ),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    expect_error(
        post(
            &format!("{whip}/BAD%20NAME"),
            "application/sdp",
            Some(&key),
            offer(None),
        ),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // Nothing was created by any of these.
    assert_eq!(server.metric("aethex_publishers"), 0.0);
    assert!(
        !server.log_text().contains(&key),
        "the stream key never reaches the log"
    );
    assert!(server.stop().success());
}

#[test]
fn whep_bad_requests_get_4xx_with_json_codes() {
    let (server, _key) = setup("whep-errors");
    let whep = format!("{}/whep", server.base);
    expect_error(
        post(
            &format!("{whep}/nope"),
            "application/sdp",
            None,
            viewer_offer(),
        ),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    expect_error(
        post(
            &format!("{whep}/alpha"),
            "application/sdp",
            None,
            viewer_offer(),
        ),
        StatusCode::NOT_FOUND,
        "offline",
    );
    expect_error(
        post(
            &format!("{whep}/alpha"),
            "application/json",
            None,
            viewer_offer(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    expect_error(
        post(
            &format!("{whep}/alpha"),
            "application/sdp",
            None,
            "\u{0}\u{1}junk".into(),
        ),
        StatusCode::BAD_REQUEST,
        "bad_sdp",
    );
    expect_error(
        http()
            .get(format!("{}/nowhere", server.base))
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert!(server.stop().success());
}

#[test]
fn whip_resource_lifecycle_follows_rfc9725() {
    let (server, key) = setup("lifecycle");
    let sdp = offer(None);
    let ufrag = sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .unwrap()
        .trim()
        .to_string();
    let resp = http()
        .post(format!("{}/whip", server.base))
        .header("content-type", "application/sdp")
        .header("origin", "http://example.test")
        .bearer_auth(&key)
        .body(sdp)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "application/sdp");
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(h["x-aethex-channel"], "alpha");
    let etag = h["etag"].to_str().unwrap().to_string();
    let location = h["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/whip/alpha/"), "{location}");
    let answer = resp.text().unwrap();
    assert!(answer.contains("a=ice-lite"));
    let sections: Vec<&str> = answer.split("\r\nm=").skip(1).collect();
    assert_eq!(sections.len(), 2);
    for s in sections {
        assert!(
            s.contains("a=candidate:") && s.contains(&server.udp.port().to_string()),
            "candidate in every m-section"
        );
        assert!(s.contains("a=end-of-candidates"));
    }
    assert_eq!(server.metric("aethex_publishers"), 1.0);

    let resource = format!("{}{location}", server.base);
    let opts = http()
        .request(reqwest::Method::OPTIONS, format!("{}/whip", server.base))
        .send()
        .unwrap();
    assert_eq!(opts.status(), StatusCode::NO_CONTENT);
    assert_eq!(opts.headers()["accept-post"], "application/sdp");
    // A trickle fragment carries the session's current ufrag (RFC 8840); a new one would be an
    // ICE restart (the router tests cover the restart exchange).
    let frag = format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:efghijklmnopqrstuvwxyz12\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40001 typ host\r\n");
    let patch = |ctype: &str, if_match: &str| {
        http()
            .patch(&resource)
            .header("content-type", ctype)
            .header("if-match", if_match)
            .body(frag.clone())
            .send()
            .unwrap()
    };
    expect_error(
        patch("application/sdp", &etag),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    expect_error(
        patch("application/trickle-ice-sdpfrag", "\"stale\""),
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
    );
    assert_eq!(
        patch("application/trickle-ice-sdpfrag", &etag).status(),
        StatusCode::NO_CONTENT
    );

    assert_eq!(
        http().delete(&resource).send().unwrap().status(),
        StatusCode::OK
    );
    expect_error(
        http().delete(&resource).send().unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_eq!(
        server.wait_metric("aethex_publishers", 0.0, Duration::from_secs(2)),
        0.0
    );
    assert!(server.stop().success());
}

#[test]
fn h264_profiles_offered_by_obs_safari_and_chromium_are_accepted() {
    let (server, key) = setup("h264");
    for profile in [0x42e01f, 0x42001f, 0x640c1f, 0x4d001f, 0x64001f] {
        let resp = post(
            &format!("{}/whip", server.base),
            "application/sdp",
            Some(&key),
            offer(Some(profile)),
        );
        assert_eq!(resp.status(), StatusCode::CREATED, "profile {profile:06x}");
        let answer = resp.text().unwrap();
        let video = answer.split("m=video").nth(1).expect("video section");
        assert!(
            !video.starts_with(" 0 "),
            "video not rejected for {profile:06x}"
        );
        assert!(
            video.contains("H264/90000"),
            "H264 kept for profile {profile:06x}: {video}"
        );
        // The publisher's own number, which it keeps sending whatever the answer says (OBS).
        assert!(
            video.starts_with(" 9 UDP/TLS/RTP/SAVPF 96 97\r\n")
                && video.contains("a=rtpmap:96 H264/90000")
                && video.contains(&format!("profile-level-id={profile:06x}")),
            "answered under 96 for profile {profile:06x}: {video}"
        );
    }
    assert!(server.stop().success());
}

#[test]
fn full_node_answers_503_with_retry_after() {
    let dir = temp_dir("full");
    let a = create_channel(&dir, "alpha");
    create_channel(&dir, "beta");
    let config = dir.join("small.toml");
    std::fs::write(&config, "[sfu]\nmax_peers = 1\n").unwrap();
    let server = Server::start(&dir, &["--config", config.to_str().unwrap()]);
    let whip = format!("{}/whip", server.base);
    let key = a["stream_key"].as_str().unwrap();
    assert_eq!(
        post(&whip, SDP, Some(key), offer(None)).status(),
        StatusCode::CREATED
    );
    let resp = post(
        &format!("{}/whep/alpha", server.base),
        "application/sdp",
        None,
        viewer_offer(),
    );
    assert_eq!(resp.headers()["retry-after"], "5");
    expect_error(resp, StatusCode::SERVICE_UNAVAILABLE, "full");
    // The same key publishing again replaces its session: allowed even when full.
    assert_eq!(
        post(&whip, SDP, Some(key), offer(None)).status(),
        StatusCode::CREATED
    );
    assert!(server.stop().success());
}

#[test]
fn ice_servers_are_announced_in_link_headers() {
    let dir = temp_dir("link");
    let a = create_channel(&dir, "alpha");
    let config = dir.join("ice.toml");
    std::fs::write(
        &config,
        "[[rtc.ice_servers]]\nurl = \"stun:stun.example.test:3478\"\n[[rtc.ice_servers]]\nurl = \"turn:turn.example.test:3478\"\nusername = \"u\"\ncredential = \"p\"\n",
    )
    .unwrap();
    let server = Server::start(&dir, &["--config", config.to_str().unwrap()]);
    let resp = post(
        &format!("{}/whip", server.base),
        "application/sdp",
        Some(a["stream_key"].as_str().unwrap()),
        offer(None),
    );
    assert_eq!(resp.status(), StatusCode::CREATED);
    let links: Vec<String> = resp
        .headers()
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(links.len(), 2, "{links:?}");
    assert!(links[0].starts_with("<stun:stun.example.test:3478>; rel=\"ice-server\""));
    assert!(
        links[1].contains("username=\"u\"") && links[1].contains("credential-type=\"password\"")
    );
    assert!(server.stop().success());
}

#[test]
fn first_serve_creates_demo_channel_and_prints_obs_settings() {
    let dir = temp_dir("banner");
    let child = serve_command(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "Service       WHIP",
        "/whip",
        "Bearer Token  sk_",
        "/watch/demo",
        "/live",
    ] {
        assert!(text.contains(needle), "banner lacks {needle:?}:\n{text}");
    }
    // The printed key works.
    let key = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Bearer Token"))
        .unwrap()
        .trim()
        .to_string();
    let server = Server::start(&dir, &[]);
    assert_eq!(
        post(
            &format!("{}/whip", server.base),
            "application/sdp",
            Some(&key),
            offer(None)
        )
        .status(),
        StatusCode::CREATED
    );
    assert!(server.stop().success());
}

#[test]
fn config_commands_explain_mistakes() {
    let out = Command::new(BIN).arg("default-config").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(repo().join("config.toml")).unwrap()
    );
    let dir = temp_dir("cfg");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[rtc]\nudp_prot = 9\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("udp_prot"), "{err}");
    let good = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(repo().join("config.toml"))
        .output()
        .unwrap();
    assert!(good.status.success());
    let dup = Command::new(BIN)
        .args(["channel", "create", "x"])
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(dup.status.success());
    let dup = Command::new(BIN)
        .args(["channel", "create", "x"])
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(dup.status.code(), Some(2));
    assert!(String::from_utf8(dup.stderr)
        .unwrap()
        .contains("already exists"));
}

#[test]
fn stage_invites_from_the_cli_print_a_token_that_the_store_admits_until_revoked() {
    let dir = temp_dir("stage");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .unwrap()
    };
    assert!(run(&["channel", "create", "duo"]).status.success());
    let out = run(&["stage", "invite", "duo", "--name", "Ann", "--ttl", "600"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = v["token"].as_str().unwrap().to_string();
    let id = v["id"].as_str().unwrap().to_string();
    assert!(token.starts_with("si_"), "{v}");
    assert!(
        v["join_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/stage/duo?invite={token}")),
        "{v}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(storage::Store::open_data_dir(&dir)).unwrap();
    let invite = rt
        .block_on(store.invite_for_token(&token))
        .unwrap()
        .unwrap();
    assert_eq!(
        (invite.name.as_str(), invite.expires_at),
        ("Ann", v["expires_at"].as_i64().unwrap())
    );
    rt.block_on(store.close());

    // Mistakes are explained, with exit code 2.
    for (args, says) in [
        (vec!["stage", "invite", "none"], "no such channel"),
        (vec!["stage", "invite", "duo", "--ttl", "5"], "ttl_s"),
        (vec!["stage", "revoke", "duo", "nope"], "no such invite"),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let out = run(&["stage", "revoke", "duo", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = rt.block_on(storage::Store::open_data_dir(&dir)).unwrap();
    assert_eq!(rt.block_on(store.invite_for_token(&token)).unwrap(), None);
    rt.block_on(store.close());
}
