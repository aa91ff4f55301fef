//! The load generator's own correctness against the real server: it connects, counts every
//! frame it sent exactly once per subscriber, decodes the counters and reports every field.
//! Speed is reported by the bench, never asserted here.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn bench_counts_every_frame_for_every_subscriber() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_bench"));
    let server = bench.with_file_name("aethex");
    assert!(
        server.exists(),
        "{} missing: build the workspace (cargo build --workspace)",
        server.display()
    );
    let out = Command::new(&bench)
        .args(["--spawn", "--server-bin"])
        .arg(&server)
        // A small AV1 clip keeps the debug-build encode short; the media path is the same.
        .args(["--subscribers", "3", "--seconds", "2", "--json"])
        .args(["--size", "160x96", "--keyint", "30"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(r["subscribers"], 3);
    assert_eq!(r["codec"], "av1", "AV1 is the default media");
    assert!(r["bitrate_kbps"].as_f64().is_some_and(|k| k > 0.0), "{r}");
    let sent = r["frames_sent"].as_u64().unwrap();
    assert!(sent >= 30, "the publisher sent {sent} frames in 2 s");
    assert_eq!(r["frames_received"].as_u64().unwrap(), 3 * sent, "{r}");
    assert_eq!(r["loss_pct"].as_f64().unwrap(), 0.0);
    assert!(r["egress_packets"].as_u64().unwrap() > 3 * sent, "{r}");
    for field in [
        "cpu_us_per_egress_packet",
        "rss_per_subscriber_kib",
        "loadgen_cpu_pct",
    ] {
        assert!(r[field].as_f64().is_some(), "{field} missing: {r}");
    }
    for p in ["p50", "p95", "p99"] {
        assert!(r["delay_ms"][p].as_f64().is_some_and(|d| d >= 0.0), "{r}");
    }
    assert!(
        r["start_ms"]["p50"].as_f64().is_some_and(|d| d > 0.0),
        "{r}"
    );
}
