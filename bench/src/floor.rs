//! The floor: the least work any SFU must do for the same egress, measured in the same run.
//!
//! For every packet the bench's subscribers would receive, the floor loop builds an RTP packet
//! of the same size, seals it with AEAD-AES-256-GCM (the SRTP profile str0m peers negotiate;
//! one cipher per subscriber, as per-subscriber keys require) using the same crypto provider as
//! the server, and sends it to one of S loopback sockets with the same socket calls as the
//! server's driver (quinn-udp, consecutive datagrams of one destination GSO-batched). No
//! parsing, no repacketization, no RTCP, no bookkeeping. The CPU of the sending thread over
//! the packets sent is the floor; the bench reports the server's CPU per packet as a ratio to it.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

/// What the floor loop sends: the bench stream's shape.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Subscribers (destinations).
    pub subscribers: usize,
    /// Sizes of the video frames of one loop of the publisher's stream, in bytes.
    pub frames: Vec<usize>,
    /// Size of one 20 ms audio packet.
    pub audio_bytes: usize,
    /// Frames per second.
    pub fps: u32,
    /// How long to run.
    pub duration: Duration,
}

/// Result of a floor run.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    /// Packets sent.
    pub packets: u64,
    /// CPU of the sending thread.
    pub cpu: Duration,
}

impl Floor {
    /// CPU microseconds per packet.
    pub fn us_per_packet(&self) -> f64 {
        if self.packets == 0 {
            0.0
        } else {
            self.cpu.as_micros() as f64 / self.packets as f64
        }
    }
}

/// RTP payload bytes per packet (str0m's default MTU leaves about this much).
const PAYLOAD: usize = 1150;
const RTP_HEADER: usize = 12;
const GCM_TAG: usize = 16;
const GSO_MAX_BYTES: usize = 60_000;

/// Packet sizes of one video frame (plus one audio packet per 20 ms, handled by the caller).
fn split(frame: usize) -> impl Iterator<Item = usize> {
    let n = frame.div_ceil(PAYLOAD).max(1);
    (0..n).map(move |i| {
        if i + 1 < n {
            PAYLOAD
        } else {
            frame - PAYLOAD * (n - 1)
        }
    })
}

/// Run the floor loop; blocks the calling thread for `w.duration`.
pub fn run(w: Workload) -> anyhow::Result<Floor> {
    let provider = str0m::crypto::from_feature_flags();
    let gcm = provider.srtp_provider.aead_aes_256_gcm();
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    let state = quinn_udp::UdpSocketState::new((&sender).into()).context("socket state")?;
    let max_segments = state.max_gso_segments().max(1);
    let mut sinks = Vec::with_capacity(w.subscribers);
    let mut ciphers = Vec::with_capacity(w.subscribers);
    for i in 0..w.subscribers {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.set_nonblocking(true)?;
        sinks.push(s);
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&(i as u64).to_be_bytes());
        ciphers.push(gcm.create_cipher(key, true));
    }
    let addrs: Vec<SocketAddr> = sinks
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<_, _>>()?;

    // Receivers drain the sinks so the kernel delivers (as for real subscribers).
    let stop = Arc::new(AtomicBool::new(false));
    let drain_stop = stop.clone();
    let drainer = std::thread::spawn(move || {
        let mut buf = vec![0u8; 2048];
        while !drain_stop.load(Ordering::Relaxed) {
            let mut idle = true;
            for s in &sinks {
                while s.recv(&mut buf).is_ok() {
                    idle = false;
                }
            }
            if idle {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    });

    let mut plain = vec![0u8; RTP_HEADER + PAYLOAD];
    let mut sealed = vec![0u8; RTP_HEADER + PAYLOAD + GCM_TAG];
    let mut batch: Vec<u8> = Vec::with_capacity(GSO_MAX_BYTES);
    let cpu0 = crate::procfs::thread_cpu_time()?;
    let start = Instant::now();
    let frame_every = Duration::from_secs(1) / w.fps.max(1);
    let mut packets = 0u64;
    let mut seq: u16 = 0;
    let mut frame_no: u32 = 0;
    while start.elapsed() < w.duration {
        let frame = w.frames[frame_no as usize % w.frames.len().max(1)];
        // Video frame plus the audio packets of one frame interval (~50/s at 30 fps: 1-2).
        let audio = if frame_no % 3 == 2 { 1 } else { 2 };
        let sizes: Vec<usize> = split(frame)
            .chain(std::iter::repeat_n(w.audio_bytes, audio))
            .collect();
        for (dest, cipher) in addrs.iter().zip(ciphers.iter_mut()) {
            let mut segment = 0;
            for (i, &size) in sizes.iter().enumerate() {
                let len = RTP_HEADER + size;
                plain[0] = 0x80;
                plain[2..4].copy_from_slice(&seq.wrapping_add(i as u16).to_be_bytes());
                let mut iv = [0u8; 12];
                iv[10..12].copy_from_slice(&seq.wrapping_add(i as u16).to_be_bytes());
                let out = &mut sealed[..len + GCM_TAG];
                out[..RTP_HEADER].copy_from_slice(&plain[..RTP_HEADER]);
                cipher
                    .encrypt(
                        &iv,
                        &plain[..RTP_HEADER],
                        &plain[RTP_HEADER..len],
                        &mut out[RTP_HEADER..],
                    )
                    .map_err(|e| anyhow::anyhow!("seal: {e:?}"))?;
                let fits = !batch.is_empty()
                    && out.len() == segment
                    && batch.len() + out.len() <= GSO_MAX_BYTES
                    && batch.len() / segment < max_segments;
                if !fits && !batch.is_empty() {
                    send(&state, &sender, *dest, &batch, segment);
                    batch.clear();
                }
                if batch.is_empty() {
                    segment = out.len();
                }
                batch.extend_from_slice(out);
                packets += 1;
            }
            if !batch.is_empty() {
                send(&state, &sender, *dest, &batch, segment);
                batch.clear();
            }
        }
        seq = seq.wrapping_add(sizes.len() as u16);
        frame_no += 1;
        let next = start + frame_every * frame_no;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let cpu = crate::procfs::thread_cpu_time()? - cpu0;
    stop.store(true, Ordering::Relaxed);
    let _ = drainer.join();
    Ok(Floor { packets, cpu })
}

fn send(
    state: &quinn_udp::UdpSocketState,
    socket: &UdpSocket,
    to: SocketAddr,
    data: &[u8],
    segment: usize,
) {
    let transmit = quinn_udp::Transmit {
        destination: to,
        ecn: None,
        contents: data,
        segment_size: (data.len() > segment).then_some(segment),
        src_ip: None,
    };
    let _ = state.try_send(socket.into(), &transmit);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_into_mtu_sized_packets() {
        assert_eq!(split(2300).collect::<Vec<_>>(), vec![1150, 1150]);
        assert_eq!(split(2301).collect::<Vec<_>>(), vec![1150, 1150, 1]);
        assert_eq!(split(10).collect::<Vec<_>>(), vec![10]);
    }

    #[test]
    fn floor_sends_every_packet_it_counts() {
        let w = Workload {
            subscribers: 3,
            frames: vec![15_000, 5_000, 5_000],
            audio_bytes: 120,
            fps: 30,
            duration: Duration::from_millis(300),
        };
        let f = run(w).unwrap();
        // 9 or 10 frames of 5 packets (one keyframe of 14) plus audio, to 3 subscribers.
        assert!(f.packets >= 3 * 9 * 6, "{f:?}");
        assert!(f.us_per_packet() >= 0.0);
    }
}
