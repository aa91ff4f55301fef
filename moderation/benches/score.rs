//! Scoring one chat message (features, the toxicity model, the sentiment lexicon).

use criterion::{criterion_group, criterion_main, Criterion};

fn score(c: &mut Criterion) {
    let scorer = moderation::Scorer::builtin().expect("the built-in model");
    let mut g = c.benchmark_group("score");
    let long = "this is a rather long message that keeps going ".repeat(10);
    for (name, text) in [
        ("short", "gg that was insane"),
        (
            "typical",
            "lol did you see that play, the whole chat went crazy, best stream this week",
        ),
        ("long", long.as_str()),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| scorer.score(std::hint::black_box(text)))
        });
    }
    g.finish();
}

criterion_group!(benches, score);
criterion_main!(benches);
