//! Recommendations, sans-IO: from watch sessions, follows and channels (the rows of the
//! platform's `viewer_sessions`, `follows` and `channels`), a [`Model`] that ranks the live
//! channels for a viewer, each with its [`Reason`]. The platform loads the rows and serves
//! the answer; `bench --bin recommend` evaluates the same code on generated logs
//! ([`synth`], [`eval`]; docs/recommendations.md).
//!
//! The hybrid, in the order a viewer sees it:
//! 1. **followed**: followed channels that are live (most viewing is repeat viewing), the ones
//!    this viewer watched most first;
//! 2. **also_watched**: item-item neighbours of what the viewer watched: cosine similarity of
//!    channels over viewers, each viewer's weight on a channel `ln(1 + minutes watched)`;
//! 3. **category**: live channels of the categories the viewer watches, by their share of the
//!    viewer's watch weight times the channel's popularity;
//! 4. **trending**: popularity = watch minutes with a half-life ([`Config::half_life_secs`]);
//!
//! and every [`Config::small_every`]-th slot goes to a small or new creator (the bottom 80 % by
//! popularity, or a channel younger than [`Config::new_secs`]), the one the viewer's own
//! neighbour and category scores rank first: reason **new_creator**. A viewer without history
//! (anonymous) gets trending with the same small-creator slots.
#![warn(missing_docs)]

use std::collections::{HashMap, HashSet};

pub mod eval;
pub mod synth;

/// A channel, as the recommender sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    /// Channel name.
    pub name: String,
    /// Category (may be empty).
    pub category: String,
    /// When it was made (Unix seconds).
    pub created_at: i64,
}

/// One watch session (a `viewer_sessions` row).
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    /// Who watched: a user id, or the anonymous viewer hash.
    pub viewer: String,
    /// Channel watched.
    pub channel: String,
    /// When it started (Unix seconds).
    pub started_at: i64,
    /// How long (seconds).
    pub seconds: i64,
}

/// Why a channel is recommended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The viewer follows it.
    Followed,
    /// Viewers of what this viewer watches also watch it.
    AlsoWatched,
    /// It is in a category this viewer watches.
    Category,
    /// Popular now.
    Trending,
    /// A small or new creator's slot.
    NewCreator,
}

impl Reason {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Followed => "followed",
            Reason::AlsoWatched => "also_watched",
            Reason::Category => "category",
            Reason::Trending => "trending",
            Reason::NewCreator => "new_creator",
        }
    }
}

/// Tuning; [`Config::default`] is what the platform and the evaluation use.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Popularity halves over this many seconds of age.
    pub half_life_secs: f64,
    /// A channel younger than this is new (seconds).
    pub new_secs: i64,
    /// Every this-many-th slot (1-based) is a small or new creator's.
    pub small_every: usize,
    /// The neighbours of at most this many of a viewer's channels count (most watched first).
    pub history: usize,
    /// A viewer's channels beyond this many (most watched first) do not count as co-watching.
    pub co_watch_cap: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            half_life_secs: 7.0 * 86_400.0,
            new_secs: 14 * 86_400,
            small_every: 4,
            history: 20,
            co_watch_cap: 50,
        }
    }
}

/// A recommendation.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    /// Channel name.
    pub channel: String,
    /// Why.
    pub reason: Reason,
}

/// Built from the logs up to `now`; answers [`Model::recommend`].
#[derive(Debug, Clone)]
pub struct Model {
    config: Config,
    /// Channel index by name.
    index: HashMap<String, usize>,
    channels: Vec<Channel>,
    /// Per viewer: (channel, weight) by weight, heaviest first.
    viewers: HashMap<String, Vec<(usize, f64)>>,
    /// Per viewer: followed channels.
    follows: HashMap<String, HashSet<usize>>,
    /// Per channel: (neighbour, cosine similarity), most similar first.
    neighbours: Vec<Vec<(usize, f64)>>,
    popularity: Vec<f64>,
    /// Bottom 80 % by popularity, or new.
    small: Vec<bool>,
}

/// `ln(1 + minutes)`: a long session counts more, but not without bound.
fn weight(seconds: i64) -> f64 {
    (1.0 + seconds.max(0) as f64 / 60.0).ln()
}

impl Model {
    /// Build from `channels`, `watches` and `follows` (viewer, channel) as of `now` (Unix
    /// seconds). Rows about unknown channels are ignored.
    pub fn build(
        channels: &[Channel],
        watches: &[Watch],
        follows: &[(String, String)],
        now: i64,
        config: Config,
    ) -> Self {
        let index: HashMap<String, usize> = channels
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let n = channels.len();
        let mut popularity = vec![0.0; n];
        let mut per_viewer: HashMap<String, HashMap<usize, f64>> = HashMap::new();
        for w in watches {
            let Some(&c) = index.get(&w.channel) else {
                continue;
            };
            let age = (now - w.started_at).max(0) as f64;
            popularity[c] +=
                w.seconds.max(0) as f64 / 60.0 * 0.5f64.powf(age / config.half_life_secs);
            *per_viewer
                .entry(w.viewer.clone())
                .or_default()
                .entry(c)
                .or_default() += w.seconds.max(0) as f64;
        }
        let viewers: HashMap<String, Vec<(usize, f64)>> = per_viewer
            .into_iter()
            .map(|(v, m)| {
                let mut list: Vec<(usize, f64)> =
                    m.into_iter().map(|(c, s)| (c, weight(s as i64))).collect();
                list.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                (v, list)
            })
            .collect();
        // Cosine over viewers: dot products from each viewer's pairs, norms per channel.
        let mut norm = vec![0.0f64; n];
        let mut dot: HashMap<(usize, usize), f64> = HashMap::new();
        let mut ordered: Vec<&String> = viewers.keys().collect();
        ordered.sort(); // deterministic float sums
        for v in ordered {
            let list = &viewers[v][..viewers[v].len().min(config.co_watch_cap)];
            for (i, &(a, wa)) in list.iter().enumerate() {
                norm[a] += wa * wa;
                for &(b, wb) in &list[i + 1..] {
                    let key = if a < b { (a, b) } else { (b, a) };
                    *dot.entry(key).or_default() += wa * wb;
                }
            }
        }
        let mut neighbours = vec![Vec::new(); n];
        for ((a, b), d) in dot {
            let s = d / (norm[a].sqrt() * norm[b].sqrt()).max(f64::MIN_POSITIVE);
            neighbours[a].push((b, s));
            neighbours[b].push((a, s));
        }
        for list in &mut neighbours {
            list.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        }
        let mut follow_map: HashMap<String, HashSet<usize>> = HashMap::new();
        for (v, c) in follows {
            if let Some(&c) = index.get(c) {
                follow_map.entry(v.clone()).or_default().insert(c);
            }
        }
        let small = small_creators(&popularity, channels, now, config.new_secs);
        Self {
            config,
            index,
            channels: channels.to_vec(),
            viewers,
            follows: follow_map,
            neighbours,
            popularity,
            small,
        }
    }

    /// Whether `channel` is a small or new creator's.
    pub fn is_small(&self, channel: &str) -> bool {
        self.index.get(channel).is_some_and(|&c| self.small[c])
    }

    /// Popularity of every channel (decayed watch minutes), by name.
    pub fn popularity(&self, channel: &str) -> f64 {
        self.index.get(channel).map_or(0.0, |&c| self.popularity[c])
    }

    /// Up to `limit` of the `live` channels for `viewer` (`None`: anonymous), best first.
    pub fn recommend(&self, viewer: Option<&str>, live: &[String], limit: usize) -> Vec<Pick> {
        let live: Vec<usize> = live
            .iter()
            .filter_map(|c| self.index.get(c).copied())
            .collect();
        let is_live: HashSet<usize> = live.iter().copied().collect();
        let history: &[(usize, f64)] = viewer
            .and_then(|v| self.viewers.get(v))
            .map_or(&[], Vec::as_slice);
        let followed = viewer.and_then(|v| self.follows.get(v));

        // Each candidate's best reason and score, in the order of the reasons.
        let mut taken: HashSet<usize> = HashSet::new();
        let mut lists: Vec<Vec<(usize, Reason)>> = Vec::new();

        // 1. Followed and live: most watched by this viewer first, then most popular.
        let mut f: Vec<usize> = followed
            .map(|s| s.iter().copied().filter(|c| is_live.contains(c)).collect())
            .unwrap_or_default();
        let watched: HashMap<usize, f64> = history.iter().copied().collect();
        f.sort_by(|a, b| {
            let key = |c: &usize| (watched.get(c).copied().unwrap_or(0.0), self.popularity[*c]);
            key(b)
                .partial_cmp(&key(a))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(b))
        });
        lists.push(f.into_iter().map(|c| (c, Reason::Followed)).collect());

        // 2. Neighbours of the viewer's history (watched channels left out: they are
        // followed, or the viewer knows them).
        let mut also: HashMap<usize, f64> = HashMap::new();
        for &(h, wh) in history.iter().take(self.config.history) {
            for &(c, s) in &self.neighbours[h] {
                if is_live.contains(&c) && !watched.contains_key(&c) {
                    *also.entry(c).or_default() += wh * s;
                }
            }
        }
        lists.push(
            ranked(&also)
                .into_iter()
                .map(|c| (c, Reason::AlsoWatched))
                .collect(),
        );

        // 3. Category affinity x popularity.
        let mut taste: HashMap<&str, f64> = HashMap::new();
        let total: f64 = history.iter().map(|h| h.1).sum();
        for &(h, wh) in history {
            let cat = self.channels[h].category.as_str();
            if !cat.is_empty() {
                *taste.entry(cat).or_default() += wh / total.max(f64::MIN_POSITIVE);
            }
        }
        let category: HashMap<usize, f64> = live
            .iter()
            .filter_map(|&c| {
                let t = taste.get(self.channels[c].category.as_str())?;
                Some((c, t * (1.0 + self.popularity[c]).ln()))
            })
            .collect();
        lists.push(
            ranked(&category)
                .into_iter()
                .map(|c| (c, Reason::Category))
                .collect(),
        );

        // 4. Trending.
        let trending: HashMap<usize, f64> = live.iter().map(|&c| (c, self.popularity[c])).collect();
        lists.push(
            ranked(&trending)
                .into_iter()
                .map(|c| (c, Reason::Trending))
                .collect(),
        );

        // The small creators' candidates: the viewer's own neighbour and category scores
        // first (a viewer without them: the newest small channels first), live only.
        let mut own: HashMap<usize, f64> = HashMap::new();
        for (c, s) in also.iter().chain(category.iter()) {
            *own.entry(*c).or_default() += s;
        }
        let mut small: Vec<usize> = live.iter().copied().filter(|&c| self.small[c]).collect();
        small.sort_by(|&a, &b| {
            let s = |c: usize| own.get(&c).copied().unwrap_or(0.0);
            s(b).total_cmp(&s(a))
                .then(
                    self.channels[b]
                        .created_at
                        .cmp(&self.channels[a].created_at),
                )
                .then(a.cmp(&b))
        });
        let mut small = small.into_iter();
        let mut regular = lists.into_iter().flatten();

        let mut out = Vec::with_capacity(limit);
        while out.len() < limit {
            let slot = out.len() + 1;
            let next = if self.config.small_every > 0 && slot % self.config.small_every == 0 {
                small
                    .by_ref()
                    .find(|c| !taken.contains(c))
                    .map(|c| (c, Reason::NewCreator))
                    .or_else(|| regular.by_ref().find(|(c, _)| !taken.contains(c)))
            } else {
                regular
                    .by_ref()
                    .find(|(c, _)| !taken.contains(c))
                    .or_else(|| {
                        small
                            .by_ref()
                            .find(|c| !taken.contains(c))
                            .map(|c| (c, Reason::NewCreator))
                    })
            };
            let Some((c, reason)) = next else { break };
            taken.insert(c);
            out.push(Pick {
                channel: self.channels[c].name.clone(),
                reason,
            });
        }
        out
    }
}

/// Keys by score, highest first (ties: lower index first).
fn ranked(scores: &HashMap<usize, f64>) -> Vec<usize> {
    let mut v: Vec<(usize, f64)> = scores.iter().map(|(c, s)| (*c, *s)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter().map(|x| x.0).collect()
}

/// The bottom 80 % of channels by popularity, and every channel younger than `new_secs`.
fn small_creators(popularity: &[f64], channels: &[Channel], now: i64, new_secs: i64) -> Vec<bool> {
    let mut order: Vec<usize> = (0..popularity.len()).collect();
    order.sort_by(|&a, &b| popularity[b].total_cmp(&popularity[a]).then(a.cmp(&b)));
    let top = (popularity.len() as f64 * 0.2).ceil() as usize;
    let mut small = vec![true; popularity.len()];
    for &c in order.iter().take(top) {
        small[c] = false;
    }
    for (c, ch) in channels.iter().enumerate() {
        if now - ch.created_at < new_secs {
            small[c] = true;
        }
    }
    small
}

#[cfg(test)]
mod tests;
