//! Generated interaction logs for the offline evaluation, seeded and deterministic, in the
//! platform's schema ([`Channel`] = `channels`, [`Watch`] = `viewer_sessions`, follows =
//! `follows`):
//!
//! - **creators** in `categories` categories, with a power-law audience: creator `r` (by a
//!   random rank) draws viewers with weight `1 / (r + 1)^zipf`; a share are new (made in the
//!   last week);
//! - **users** with tastes: one favourite category (half of their interest), a second (a
//!   third), the rest spread; each follows a few channels of the favourite, popular ones more
//!   likely;
//! - **sessions** over `days`: each day a user watches a few channels, a followed one with
//!   probability `repeat` (most viewing is repeat viewing), otherwise one drawn by taste x
//!   popularity; the session lasts longer when the category is a favourite.

use crate::{Channel, Watch};

/// A small, fast, seeded generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }

    /// An index drawn with probability proportional to `weights` (cumulative sums given).
    pub fn pick(&mut self, cumulative: &[f64]) -> usize {
        let total = cumulative.last().copied().unwrap_or(0.0);
        let x = self.unit() * total;
        cumulative
            .partition_point(|c| *c <= x)
            .min(cumulative.len() - 1)
    }
}

/// The shape of a generated log.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Users.
    pub users: usize,
    /// Channels (one creator each).
    pub creators: usize,
    /// Categories.
    pub categories: usize,
    /// Days of sessions.
    pub days: usize,
    /// Power-law exponent of creators' audiences.
    pub zipf: f64,
    /// Share of sessions on a followed channel.
    pub repeat: f64,
    /// Channels a user watches on a day they watch, at most.
    pub sessions_per_day: usize,
    /// Share of creators that are new (made in the last week).
    pub new_share: f64,
    /// Seed.
    pub seed: u64,
}

impl Spec {
    /// The size CI runs (seconds in debug builds).
    pub fn small(seed: u64) -> Self {
        Self {
            users: 400,
            creators: 120,
            categories: 8,
            days: 28,
            zipf: 1.1,
            repeat: 0.6,
            sessions_per_day: 3,
            new_share: 0.1,
            seed,
        }
    }

    /// The size docs/recommendations.md reports.
    pub fn full(seed: u64) -> Self {
        Self {
            users: 5_000,
            creators: 1_000,
            categories: 20,
            ..Self::small(seed)
        }
    }
}

/// A generated log.
#[derive(Debug, Clone)]
pub struct Log {
    /// The channels.
    pub channels: Vec<Channel>,
    /// Every session, in time order.
    pub watches: Vec<Watch>,
    /// (user, channel).
    pub follows: Vec<(String, String)>,
    /// The end of the log (Unix seconds).
    pub end: i64,
}

const DAY: i64 = 86_400;
/// Where generated time starts (2026-01-01).
const START: i64 = 1_767_225_600;

/// Generate a log of `spec`.
pub fn generate(spec: &Spec) -> Log {
    let mut rng = Rng::new(spec.seed);
    let end = START + spec.days as i64 * DAY;
    // Creators: a category each, a popularity by a random rank, some new.
    let mut ranks: Vec<usize> = (0..spec.creators).collect();
    for i in (1..ranks.len()).rev() {
        ranks.swap(i, rng.below(i + 1));
    }
    let popularity: Vec<f64> = ranks
        .iter()
        .map(|r| 1.0 / ((r + 1) as f64).powf(spec.zipf))
        .collect();
    let category: Vec<usize> = (0..spec.creators)
        .map(|_| rng.below(spec.categories))
        .collect();
    let created: Vec<i64> = (0..spec.creators)
        .map(|_| {
            if rng.unit() < spec.new_share {
                end - 7 * DAY + rng.below(7 * DAY as usize) as i64
            } else {
                START - 365 * DAY + rng.below(300 * DAY as usize) as i64
            }
        })
        .collect();
    let channels: Vec<Channel> = (0..spec.creators)
        .map(|c| Channel {
            name: format!("c{c:04}"),
            category: format!("cat{}", category[c]),
            created_at: created[c],
        })
        .collect();
    let by_category: Vec<Vec<usize>> = (0..spec.categories)
        .map(|k| (0..spec.creators).filter(|c| category[*c] == k).collect())
        .collect();

    let mut watches = Vec::new();
    let mut follows = Vec::new();
    for u in 0..spec.users {
        let user = format!("u{u:05}");
        let first = rng.below(spec.categories);
        let second = rng.below(spec.categories);
        let taste: Vec<f64> = (0..spec.categories)
            .map(|k| {
                let base = 0.2 / spec.categories as f64;
                base + if k == first { 0.5 } else { 0.0 } + if k == second { 0.3 } else { 0.0 }
            })
            .collect();
        // What this user would pick: taste x popularity, over channels that exist by then.
        let affinity: Vec<f64> = (0..spec.creators)
            .map(|c| taste[category[c]] * popularity[c])
            .collect();
        // Follows: 1 to 4 channels of the favourite category, popular ones more likely.
        let mut followed = Vec::new();
        let favourites = &by_category[first];
        if !favourites.is_empty() {
            let cum = cumulative(favourites.iter().map(|&c| popularity[c].sqrt()));
            for _ in 0..1 + rng.below(4) {
                let c = favourites[rng.pick(&cum)];
                if !followed.contains(&c) {
                    followed.push(c);
                }
            }
        }
        for &c in &followed {
            follows.push((user.clone(), channels[c].name.clone()));
        }
        let activity = 0.2 + 0.6 * rng.unit();
        for day in 0..spec.days {
            if rng.unit() > activity {
                continue;
            }
            let today = START + day as i64 * DAY;
            let cum = cumulative((0..spec.creators).map(|c| {
                if created[c] < today + DAY {
                    affinity[c]
                } else {
                    0.0
                }
            }));
            for _ in 0..1 + rng.below(spec.sessions_per_day) {
                let c = if !followed.is_empty() && rng.unit() < spec.repeat {
                    followed[rng.below(followed.len())]
                } else {
                    rng.pick(&cum)
                };
                if created[c] >= today + DAY {
                    continue;
                }
                let liked = if category[c] == first { 3.0 } else { 1.0 };
                let minutes = liked * (5.0 + 40.0 * rng.unit());
                watches.push(Watch {
                    viewer: user.clone(),
                    channel: channels[c].name.clone(),
                    started_at: today.max(created[c]) + rng.below(DAY as usize / 2) as i64,
                    seconds: (minutes * 60.0) as i64,
                });
            }
        }
    }
    watches.sort_by(|a, b| {
        a.started_at
            .cmp(&b.started_at)
            .then(a.viewer.cmp(&b.viewer))
    });
    Log {
        channels,
        watches,
        follows,
        end,
    }
}

fn cumulative(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut sum = 0.0;
    weights
        .map(|w| {
            sum += w;
            sum
        })
        .collect()
}
