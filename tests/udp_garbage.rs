//! 10,000 random datagrams at the media port during a live stream: counted, dropped, and the
//! viewer (aiortc) keeps decoding.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;

#[test]
fn random_udp_datagrams_do_not_disturb_a_live_stream() {
    let dir = temp_dir("garbage");
    let ch = create_channel(&dir, "live");
    let server = Server::start(&dir, &[]);
    let publisher = publisher(&server, ch["stream_key"].as_str().unwrap(), "vp8", 12);
    let whep = format!("{}/whep/live", server.base);
    let viewer = Peer::spawn(
        "viewer",
        &[
            "view",
            "--url",
            &whep,
            "--duration",
            "8",
            "--min-video-frames",
            "60",
        ]
        .map(s),
    );
    std::thread::sleep(Duration::from_secs(1));

    let before = drops(&server);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for burst in 0..100 {
        for _ in 0..100 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 1 + (x % 1400) as usize;
            let data: Vec<u8> = (0..len)
                .map(|i| (x.rotate_left(i as u32 % 64) >> 3) as u8)
                .collect();
            sock.send_to(&data, server.udp).unwrap();
        }
        let _ = burst;
        std::thread::sleep(Duration::from_millis(20));
    }
    let result = viewer.result(Duration::from_secs(40));
    eprintln!("viewer under garbage: {result}");
    assert_eq!(result["ok"], true, "{result}");
    assert!(result["video_frames"].as_u64().unwrap() >= 60, "{result}");
    let dropped = drops(&server) - before;
    // Loopback may lose a few under the burst; nearly all must be seen and counted.
    assert!(
        dropped >= 9_500.0,
        "only {dropped} of 10000 garbage datagrams were counted"
    );
    assert_eq!(publisher.result(Duration::from_secs(30))["ok"], true);
    assert_eq!(server.metric("aethex_peer_failures_total"), 0.0);
    assert!(server.stop().success());
}

fn drops(server: &Server) -> f64 {
    ["malformed", "unknown_source", "rejected"]
        .iter()
        .map(|r| server.metric(&format!("aethex_drops_total{{reason=\"{r}\"}}")))
        .sum()
}
