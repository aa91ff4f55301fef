//! `recommend`: the offline evaluation of the recommender (docs/recommendations.md). For each
//! seed, a generated interaction log (`discovery::synth`), the model built from all but its
//! last week, and Recall@10, NDCG@10, catalogue coverage and small-creator share of the hybrid,
//! the hybrid without its small-creator slots, popularity and random; then the median of each
//! figure over the seeds. Seeded: the same command prints the same figures.
//!
//!   cargo run --release -p bench --bin recommend -- --size full --seeds 5

use std::time::Instant;

use clap::{Parser, ValueEnum};
use discovery::eval::{evaluate, Figures};
use discovery::synth::{generate, Spec};

#[derive(Clone, Copy, ValueEnum)]
enum Size {
    /// 400 users, 120 channels (what CI runs).
    Small,
    /// 5,000 users, 1,000 channels.
    Full,
}

/// Offline evaluation of the recommender on generated logs.
#[derive(Parser)]
struct Args {
    /// The log's size.
    #[arg(long, value_enum, default_value = "full")]
    size: Size,
    /// Seeds 1..=N.
    #[arg(long, default_value_t = 5)]
    seeds: u64,
}

fn main() {
    let args = Args::parse();
    let mut all: Vec<Vec<Figures>> = Vec::new();
    for seed in 1..=args.seeds.max(1) {
        let spec = match args.size {
            Size::Small => Spec::small(seed),
            Size::Full => Spec::full(seed),
        };
        let started = Instant::now();
        let log = generate(&spec);
        let report = evaluate(&log, seed);
        println!(
            "seed {seed}: {} users, {} channels, {} sessions, {} follows; {} users scored, {} channels live ({:.1} s)\n",
            spec.users,
            spec.creators,
            log.watches.len(),
            log.follows.len(),
            report.users,
            report.live,
            started.elapsed().as_secs_f64()
        );
        println!("{}", report.table());
        all.push(report.methods);
    }
    println!("median over {} seeds:\n", all.len());
    println!(
        "| method | Recall@10 | NDCG@10 | coverage | small-creator share |\n|---|---|---|---|---|"
    );
    for (m, first) in all[0].iter().enumerate() {
        let median = |f: fn(&Figures) -> f64| {
            let mut v: Vec<f64> = all.iter().map(|r| f(&r[m])).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "| {} | {:.3} | {:.3} | {:.1} % | {:.1} % |",
            first.method,
            median(|f| f.recall),
            median(|f| f.ndcg),
            100.0 * median(|f| f.coverage),
            100.0 * median(|f| f.small_share)
        );
    }
}
