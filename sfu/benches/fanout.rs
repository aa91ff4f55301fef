//! Fan-out of one publisher packet to 1/10/100/1000 subscribers through the sans-IO SFU core.
//!
//! Set-up (not timed): an in-memory world with one publisher and N subscribers, all real str0m
//! peers, connected through ICE, DTLS and SRTP in virtual time. Timed: one SRTP video packet
//! from the publisher enters `Sfu::handle_input` and every resulting datagram is polled out
//! (depacketise, keyframe gate, rebase, write to N subscriber engines, packetise, SRTP-protect
//! for each). Each iteration uses a fresh packet, made by the publisher in the untimed set-up,
//! because SRTP replay protection drops a packet seen twice.
//!
//! Divide the time by N for the core's cost per egress packet, before socket calls.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use media_core::rtp::RtpHeader;
use sfu::{Input, Output};
use str0m::media::MediaKind;

/// Filler bytes per frame: one RTP packet of about 1 kB.
const FILLER: usize = 986;

#[path = "../tests/support/mod.rs"]
mod support;
use support::*;

struct Bench {
    world: World,
    publisher: usize,
    subscribers: usize,
    frame: u32,
}

impl Bench {
    fn new(subscribers: usize) -> Self {
        let mut world = World::with_max_peers(subscribers + 1);
        let publisher = world.publish("10.0.0.1:1000", "bench");
        for i in 0..subscribers {
            let addr = format!("10.1.{}.{}:2000", i / 250, i % 250 + 1);
            world.subscribe(&addr, "bench");
        }
        world.connect_all();
        let mut b = Self {
            world,
            publisher,
            subscribers,
            frame: 0,
        };
        // Start everyone on a keyframe so the timed packets are plain forwarding.
        b.world.clients[b.publisher].write(
            b.world.now,
            MediaKind::Video,
            0,
            vp8_frame(0, true, FILLER),
        );
        b.world.run_for(Duration::from_millis(50));
        let got = b
            .world
            .clients
            .iter()
            .filter(|c| !c.video_in.is_empty())
            .count();
        assert_eq!(
            got, subscribers,
            "every subscriber decoded the first keyframe"
        );
        b
    }

    /// The publisher's next packet (untimed): a delta frame, one RTP packet.
    fn next_packet(&mut self) -> Vec<u8> {
        self.frame += 1;
        self.world.now += Duration::from_micros(1);
        let now = self.world.now;
        let c = &mut self.world.clients[self.publisher];
        c.write(
            now,
            MediaKind::Video,
            u64::from(self.frame) * 3000,
            vp8_frame(self.frame, false, FILLER),
        );
        let mut rtcp = Vec::new();
        let mut packet = None;
        for _ in 0..100 {
            match c.rtc.poll_output().expect("publisher output") {
                str0m::Output::Transmit(t) if RtpHeader::parse(&t.contents).is_ok() => {
                    packet = Some(Vec::from(t.contents));
                    break;
                }
                str0m::Output::Transmit(t) => rtcp.push(Vec::from(t.contents)),
                str0m::Output::Timeout(_) => {
                    c.rtc.handle_input(str0m::Input::Timeout(now)).unwrap()
                }
                str0m::Output::Event(_) => {}
            }
        }
        // Sender reports and the like reach the SFU too, outside the timed part.
        for r in rtcp {
            self.forward(&r);
        }
        packet.expect("the publisher emits an RTP packet for a written frame")
    }

    /// The timed part: the SFU takes the packet and emits one datagram per subscriber.
    fn forward(&mut self, packet: &[u8]) -> usize {
        let from = self.world.clients[self.publisher].addr;
        self.world.sfu.handle_input(Input::Datagram {
            at: self.world.now,
            from,
            to: sfu_addr(),
            data: packet,
        });
        let mut sent = 0;
        loop {
            match self.world.sfu.poll_output() {
                Output::Transmit(t) => {
                    sent += 1;
                    std::hint::black_box(t);
                }
                Output::Event(_) | Output::Relay(_) => {}
                Output::Timeout(_) => return sent,
            }
        }
    }
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_one_packet");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    for n in [1usize, 10, 100, 1000] {
        let mut b = Bench::new(n);
        // Sanity (untimed): one packet in, one datagram per subscriber out.
        let p = b.next_packet();
        assert_eq!(
            b.forward(&p),
            b.subscribers,
            "one egress datagram per subscriber"
        );
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| {
            bench.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let p = b.next_packet();
                    let start = Instant::now();
                    std::hint::black_box(b.forward(&p));
                    timed += start.elapsed();
                }
                timed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
