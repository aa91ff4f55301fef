//! Per-packet primitives of the media path, timed by criterion:
//! - demux lookup in a table of 10 000 sessions: a packet from a known address (the fast path),
//!   a STUN check introducing a new address by ufrag, and garbage;
//! - RTP header parse, and parse + rebase + rewrite in place (what a packet-level forwarder does
//!   per subscriber before SRTP).
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use media_core::demux::binding_request_with_username;
use media_core::routes::{Route, Routes};
use media_core::rtp::{rewrite, Rewrite, RtpHeader};
use media_core::timeline::Rebaser;

const SESSIONS: u32 = 10_000;

fn addr(i: u32) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 40_000))
}

fn demux(c: &mut Criterion) {
    let mut routes = Routes::new();
    for i in 0..SESSIONS {
        routes.add_session(&format!("{i:016x}"), i);
        routes.learn(addr(i), i);
    }
    let rtp = [0x80u8, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xaa];
    let check = binding_request_with_username([3; 12], &format!("{:016x}:client", SESSIONS / 2));
    let mut group = c.benchmark_group("demux_10k_sessions");
    group.throughput(Throughput::Elements(1));
    let mut i = 0u32;
    group.bench_function("known_address", |b| {
        b.iter(|| {
            i = (i + 7919) % SESSIONS;
            let r = routes.route(black_box(addr(i)), black_box(&rtp));
            debug_assert!(matches!(r, Route::Known(..)));
            r
        })
    });
    group.bench_function("stun_check_from_new_address", |b| {
        b.iter(|| routes.route(black_box(addr(SESSIONS + 1)), black_box(&check)))
    });
    group.bench_function("garbage", |b| {
        b.iter(|| routes.route(black_box(addr(SESSIONS + 1)), black_box(&[0xffu8; 40])))
    });
    group.finish();
}

fn rtp(c: &mut Criterion) {
    let mut packet = vec![
        0x90u8,
        0x80 | 96,
        0x12,
        0x34,
        0,
        0,
        0x30,
        0x39,
        0xde,
        0xad,
        0xbe,
        0xef,
    ];
    packet.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0xff, 0, 0]); // one-byte extension
    packet.resize(1200, 0x55);
    let mut group = c.benchmark_group("rtp");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse", |b| b.iter(|| RtpHeader::parse(black_box(&packet))));
    let epoch = Instant::now();
    let mut rebaser = Rebaser::new(90_000);
    let mut seq = 0u16;
    let mut now = epoch;
    group.bench_function("parse_rebase_rewrite", |b| {
        b.iter(|| {
            let h = RtpHeader::parse(black_box(&packet)).expect("valid packet");
            now += Duration::from_micros(1);
            let ts = rebaser.map(1, u64::from(h.timestamp), now) as u32;
            seq = seq.wrapping_add(1);
            let to = Rewrite {
                payload_type: 100,
                sequence: seq,
                timestamp: ts,
                ssrc: 42,
            };
            rewrite(black_box(&mut packet), to)
        })
    });
    group.finish();
}

criterion_group!(benches, demux, rtp);
criterion_main!(benches);
