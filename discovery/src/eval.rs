//! Offline evaluation on a [`Log`]: the model is built from every session before the last
//! week, half of the channels (seeded) are live at the split, and each user's relevant
//! channels are the live ones they watched in that last week. For each method, the means over
//! users of Recall@10 and NDCG@10 (binary relevance), the catalogue coverage (the share of
//! live channels recommended to anyone) and the share of impressions (recommended slots) on
//! small creators (the bottom 80 % by popularity before the split, or new).

use std::collections::{HashMap, HashSet};

use crate::synth::{Log, Rng};
use crate::{Config, Model};

/// The list length measured.
pub const K: usize = 10;
const DAY: i64 = 86_400;

/// One method's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// The method.
    pub method: &'static str,
    /// Mean Recall@10.
    pub recall: f64,
    /// Mean NDCG@10.
    pub ndcg: f64,
    /// Live channels recommended to anyone / live channels.
    pub coverage: f64,
    /// Impressions on small creators / impressions.
    pub small_share: f64,
}

/// The evaluation's result.
#[derive(Debug, Clone)]
pub struct Report {
    /// Users with a relevant channel (the others are not scored).
    pub users: usize,
    /// Channels live at the split.
    pub live: usize,
    /// Hybrid, hybrid without small-creator slots, popularity, random.
    pub methods: Vec<Figures>,
}

impl Report {
    /// The figures of `method`.
    pub fn get(&self, method: &str) -> Option<&Figures> {
        self.methods.iter().find(|f| f.method == method)
    }

    /// A Markdown table.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| method | Recall@10 | NDCG@10 | coverage | small-creator share |\n|---|---|---|---|---|\n",
        );
        for f in &self.methods {
            s += &format!(
                "| {} | {:.3} | {:.3} | {:.1} % | {:.1} % |\n",
                f.method,
                f.recall,
                f.ndcg,
                100.0 * f.coverage,
                100.0 * f.small_share
            );
        }
        s
    }
}

/// Evaluate on `log` (live set drawn with `seed`).
pub fn evaluate(log: &Log, seed: u64) -> Report {
    let split = log.end - 7 * DAY;
    let train: Vec<_> = log
        .watches
        .iter()
        .filter(|w| w.started_at < split)
        .cloned()
        .collect();
    let mut rng = Rng::new(seed ^ 0x5eed);
    let live: Vec<String> = log
        .channels
        .iter()
        .filter(|_| rng.unit() < 0.5)
        .map(|c| c.name.clone())
        .collect();
    let live_set: HashSet<&str> = live.iter().map(String::as_str).collect();
    let mut users: Vec<&str> = log.watches.iter().map(|w| w.viewer.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    let mut relevant: HashMap<&str, HashSet<&str>> = HashMap::new();
    for w in log.watches.iter().filter(|w| w.started_at >= split) {
        if live_set.contains(w.channel.as_str()) {
            relevant
                .entry(w.viewer.as_str())
                .or_default()
                .insert(w.channel.as_str());
        }
    }
    let hybrid = Model::build(
        &log.channels,
        &train,
        &log.follows,
        split,
        Config::default(),
    );
    let plain = Model::build(
        &log.channels,
        &train,
        &log.follows,
        split,
        Config {
            small_every: 0,
            ..Config::default()
        },
    );
    let mut by_popularity = live.clone();
    by_popularity.sort_by(|a, b| {
        hybrid
            .popularity(b)
            .total_cmp(&hybrid.popularity(a))
            .then(a.cmp(b))
    });
    by_popularity.truncate(K);

    let methods: [&'static str; 4] = [
        "hybrid",
        "hybrid, no small-creator slots",
        "popularity",
        "random",
    ];
    let mut lists: Vec<Vec<Vec<String>>> = vec![Vec::new(); methods.len()];
    let mut truths = Vec::new();
    let mut shuffle = Rng::new(seed ^ 0x7a4d);
    for u in users {
        let Some(truth) = relevant.remove(u) else {
            continue;
        };
        let names = |picks: Vec<crate::Pick>| picks.into_iter().map(|p| p.channel).collect();
        lists[0].push(names(hybrid.recommend(Some(u), &live, K)));
        lists[1].push(names(plain.recommend(Some(u), &live, K)));
        lists[2].push(by_popularity.clone());
        let mut r = live.clone();
        for i in (1..r.len()).rev() {
            r.swap(i, shuffle.below(i + 1));
        }
        r.truncate(K);
        lists[3].push(r);
        truths.push(truth);
    }
    let figures = methods
        .iter()
        .zip(&lists)
        .map(|(method, recs)| figures(method, recs, &truths, &hybrid, live.len()))
        .collect();
    Report {
        users: truths.len(),
        live: live.len(),
        methods: figures,
    }
}

fn figures(
    method: &'static str,
    recs: &[Vec<String>],
    truths: &[HashSet<&str>],
    model: &Model,
    live: usize,
) -> Figures {
    let n = recs.len().max(1) as f64;
    let mut recall = 0.0;
    let mut ndcg = 0.0;
    let mut shown: HashSet<&str> = HashSet::new();
    let (mut impressions, mut small) = (0usize, 0usize);
    for (rec, truth) in recs.iter().zip(truths) {
        let hits: Vec<bool> = rec.iter().map(|c| truth.contains(c.as_str())).collect();
        recall += hits.iter().filter(|h| **h).count() as f64 / truth.len() as f64;
        let dcg: f64 = hits
            .iter()
            .enumerate()
            .filter(|(_, h)| **h)
            .map(|(i, _)| 1.0 / (i as f64 + 2.0).log2())
            .sum();
        let ideal: f64 = (0..truth.len().min(K))
            .map(|i| 1.0 / (i as f64 + 2.0).log2())
            .sum();
        ndcg += dcg / ideal;
        for c in rec {
            shown.insert(c.as_str());
            impressions += 1;
            small += usize::from(model.is_small(c));
        }
    }
    Figures {
        method,
        recall: recall / n,
        ndcg: ndcg / n,
        coverage: shown.len() as f64 / live.max(1) as f64,
        small_share: small as f64 / impressions.max(1) as f64,
    }
}
