//! CPU cost of the server-side mix of one stage: one 20 ms frame of 6 participants (decode 6
//! Opus frames, sum, encode one). Divide by 20 ms for the share of one core a stage takes.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use stage::mix::{Mixer, FRAME, SAMPLE_RATE};
use stage::ParticipantId;

/// 500 frames (10 s) of a sine at `hz`, Opus-encoded.
fn tone(hz: f64) -> Vec<Vec<u8>> {
    let mut enc =
        opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip).unwrap();
    (0..500)
        .map(|f| {
            let pcm: Vec<i16> = (0..FRAME)
                .map(|i| {
                    let t = (f * FRAME + i) as f64 / f64::from(SAMPLE_RATE);
                    (0.2 * 32_767.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
                })
                .collect();
            enc.encode_vec(&pcm, 1500).unwrap()
        })
        .collect()
}

fn mix(c: &mut Criterion) {
    let mut group = c.benchmark_group("stage_mix_frame");
    for participants in [2u64, 6] {
        let streams: Vec<Vec<Vec<u8>>> = (0..participants)
            .map(|p| tone(300.0 + 150.0 * p as f64))
            .collect();
        let mut m = Mixer::new().unwrap();
        for p in 0..participants {
            m.add(ParticipantId(p)).unwrap();
        }
        let mut f = 0;
        group.bench_with_input(
            BenchmarkId::from_parameter(participants),
            &participants,
            |b, _| {
                b.iter(|| {
                    for (p, s) in streams.iter().enumerate() {
                        m.push(ParticipantId(p as u64), &s[f % s.len()]);
                    }
                    f += 1;
                    m.mix().unwrap()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, mix);
criterion_main!(benches);
