//! ICE restart in virtual time: a viewer whose network changes (new address) restarts ICE with
//! new credentials, as a browser's `restartIce()` followed by a WHEP PATCH does, and keeps its
//! session: same peer, same DTLS/SRTP, media continues.
#![allow(clippy::disallowed_methods)] // the test picks the virtual epoch from the clock once

use std::net::SocketAddr;
use std::time::Duration;

use str0m::media::MediaKind;
use str0m::Candidate;

mod support;
use support::*;

fn send_frames(w: &mut World, publisher: usize, first: u32, count: u32) {
    for n in first..first + count {
        let key = n == 0 || w.clients[publisher].keyframe_requests > 0;
        w.clients[publisher].keyframe_requests = 0;
        let now = w.now;
        w.clients[publisher].write(
            now,
            MediaKind::Video,
            90_000 + u64::from(n) * 3_000,
            vp8_frame(n, key, 800),
        );
        w.run_for(Duration::from_millis(33));
    }
}

#[test]
fn an_ice_restart_moves_a_viewer_to_a_new_address_and_keeps_its_session() {
    restart_ice_and_watch("127.0.0.1:7002");
}

#[test]
fn an_ice_restart_on_the_same_address_keeps_the_session() {
    restart_ice_and_watch("127.0.0.1:7001");
}

fn restart_ice_and_watch(new: &str) {
    let mut w = World::new();
    let p = w.publish("127.0.0.1:7000", "demo");
    let v = w.subscribe("127.0.0.1:7001", "demo");
    w.connect_all();
    send_frames(&mut w, p, 0, 30);
    let before = w.clients[v].video_in.len();
    assert!(before > 20, "viewer receives before the restart: {before}");
    let peers = w.sfu.peer_count();

    // The viewer's network changes: the old address is gone, a new one appears, and the client
    // restarts ICE with fresh credentials.
    let old = w.clients[v].addr;
    let new: SocketAddr = new.parse().unwrap();
    let (offer, pending) = {
        let c = &mut w.clients[v];
        let mut api = c.rtc.sdp_api();
        api.ice_restart(false);
        let (offer, pending) = api.apply().expect("an ICE restart offer");
        c.addr = new;
        (offer.to_sdp_string(), pending)
    };
    w.index.remove(&old);
    w.index.insert(new, v);
    // What a WHEP client PATCHes: its new ufrag and password.
    let attr = |name: &str| {
        offer
            .lines()
            .find_map(|l| l.trim().strip_prefix(name).map(str::to_string))
            .unwrap()
    };
    let peer = w.clients[v].peer.unwrap();
    let server = w
        .sfu
        .restart_ice(peer, &attr("a=ice-ufrag:"), &attr("a=ice-pwd:"), &[])
        .unwrap();
    let candidates: Vec<String> = server
        .candidates
        .iter()
        .map(|c| format!("{c}\r\n"))
        .collect();
    // What the client does with the PATCH response: the first answer with the new server
    // credentials.
    let answer: String = w.clients[v]
        .answer
        .lines()
        .map(|l| {
            if l.starts_with("a=ice-ufrag:") {
                format!("a=ice-ufrag:{}\r\n", server.ufrag)
            } else if l.starts_with("a=ice-pwd:") {
                format!("a=ice-pwd:{}\r\n", server.pwd)
            } else if l.starts_with("a=candidate:") {
                // The PATCH response's candidates replace the old ones.
                candidates.join("")
            } else {
                format!("{}\r\n", l.trim_end())
            }
        })
        .collect();
    w.clients[v].accept(pending, &answer);
    // Gathering on the new network (the restart dropped the old candidates).
    w.clients[v]
        .rtc
        .add_local_candidate(Candidate::host(new, "udp").unwrap());

    send_frames(&mut w, p, 30, 60);
    let c = &w.clients[v];
    let after: Vec<u32> = c.video_in[before..]
        .iter()
        .map(|(f, _)| counter(f))
        .collect();
    assert!(
        after.len() > 40,
        "media continues at the new address: {} frames",
        after.len()
    );
    assert!(after.windows(2).all(|p| p[0] < p[1]), "in order");
    assert_eq!(w.sfu.peer_count(), peers, "same sessions, none replaced");
    assert_eq!(w.sfu.peer_info(peer).map(|i| i.1), Some(false));
    assert_eq!(w.sfu.stats().ice_restarts, 1);
}

#[test]
fn an_ice_restart_without_credentials_or_for_an_unknown_session_is_refused() {
    let mut w = World::new();
    let _p = w.publish("127.0.0.1:7000", "demo");
    let v = w.subscribe("127.0.0.1:7001", "demo");
    w.connect_all();
    let peer = w.clients[v].peer.unwrap();
    assert!(w.sfu.restart_ice(peer, "", " ", &[]).is_err());
    w.sfu.close(peer).unwrap();
    assert_eq!(
        w.sfu.restart_ice(peer, "u", &"p".repeat(22), &[]),
        Err(sfu::SfuError::UnknownPeer)
    );
}
