//! How well a classifier does: per-class precision and recall, macro-F1, by k-fold
//! cross-validation on a labelled set; and the word-list baseline it is compared with.

use std::collections::HashMap;

use crate::model::{shuffle, CLASSES, NEITHER};

/// A confusion matrix: `counts[truth][predicted]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confusion {
    /// Counts by true class, then predicted class.
    pub counts: [[u64; 3]; 3],
}

/// One class's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassFigures {
    /// Of the messages predicted this class, the share that are.
    pub precision: f64,
    /// Of the messages of this class, the share predicted so.
    pub recall: f64,
    /// Their harmonic mean.
    pub f1: f64,
}

impl Confusion {
    /// Count one prediction.
    pub fn add(&mut self, truth: usize, predicted: usize) {
        self.counts[truth][predicted] += 1;
    }

    /// Add another matrix (folds summed).
    pub fn merge(&mut self, other: &Confusion) {
        for t in 0..3 {
            for p in 0..3 {
                self.counts[t][p] += other.counts[t][p];
            }
        }
    }

    /// The figures of class `k`.
    pub fn class(&self, k: usize) -> ClassFigures {
        let tp = self.counts[k][k] as f64;
        let predicted: u64 = (0..3).map(|t| self.counts[t][k]).sum();
        let actual: u64 = self.counts[k].iter().sum();
        let ratio = |a: f64, b: u64| if b == 0 { 0.0 } else { a / b as f64 };
        let (precision, recall) = (ratio(tp, predicted), ratio(tp, actual));
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        ClassFigures {
            precision,
            recall,
            f1,
        }
    }

    /// The mean of the classes' F1.
    pub fn macro_f1(&self) -> f64 {
        (0..3).map(|k| self.class(k).f1).sum::<f64>() / 3.0
    }

    /// The share predicted right.
    pub fn accuracy(&self) -> f64 {
        let right: u64 = (0..3).map(|k| self.counts[k][k]).sum();
        let all: u64 = self.counts.iter().flatten().sum();
        if all == 0 {
            0.0
        } else {
            right as f64 / all as f64
        }
    }
}

/// The `k` folds of `n` examples: each example's fold, shuffled with `seed`, sizes within one.
pub fn folds(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = seed | 1;
    shuffle(&mut order, &mut state);
    let mut fold = vec![0; n];
    for (rank, i) in order.into_iter().enumerate() {
        fold[i] = rank % k.max(1);
    }
    fold
}

/// Cross-validate: for each of the `k` folds, `fit` on the others and `predict` the fold; the
/// confusion matrix over all folds.
pub fn cross_validate<M>(
    labels: &[usize],
    k: usize,
    seed: u64,
    fit: impl Fn(&[usize]) -> M,
    predict: impl Fn(&M, usize) -> usize,
) -> Confusion {
    let fold = folds(labels.len(), k, seed);
    let mut total = Confusion::default();
    for f in 0..k {
        let train: Vec<usize> = (0..labels.len()).filter(|i| fold[*i] != f).collect();
        let model = fit(&train);
        for i in (0..labels.len()).filter(|i| fold[*i] == f) {
            total.add(labels[i], predict(&model, i));
        }
    }
    total
}

/// The baseline: two word lists derived from the training messages (the words most
/// over-represented in hate, and in hate or offensive messages, by smoothed log-odds, among
/// those over-represented at all); a
/// message with a hate-list word is hate, else one with an offensive-list word is offensive,
/// else neither.
#[derive(Debug, Clone, Default)]
pub struct WordList {
    hate: Vec<String>,
    offensive: Vec<String>,
}

/// Words each list keeps.
const LIST_HATE: usize = 40;
const LIST_OFFENSIVE: usize = 60;
/// A word must occur this often in the training messages to be listed.
const MIN_COUNT: u32 = 5;

impl WordList {
    /// Derive the lists from `messages` (words, class).
    pub fn derive(messages: &[(&[String], usize)]) -> Self {
        let mut counts: HashMap<&str, [u32; 3]> = HashMap::new();
        let mut totals = [0u32; 3];
        for (words, class) in messages {
            let mut seen: Vec<&str> = words.iter().map(String::as_str).collect();
            seen.sort_unstable();
            seen.dedup();
            for w in seen {
                counts.entry(w).or_default()[*class] += 1;
            }
            totals[*class] += 1;
        }
        let odds = |inside: u32, all_inside: u32, outside: u32, all_outside: u32| {
            let p = (f64::from(inside) + 0.5) / (f64::from(all_inside) + 1.0);
            let q = (f64::from(outside) + 0.5) / (f64::from(all_outside) + 1.0);
            (p / (1.0 - p)).ln() - (q / (1.0 - q)).ln()
        };
        let top = |score: &dyn Fn(&[u32; 3]) -> f64, n: usize| {
            let mut ranked: Vec<(&str, f64)> = counts
                .iter()
                .filter(|(_, c)| c.iter().sum::<u32>() >= MIN_COUNT)
                .map(|(w, c)| (*w, score(c)))
                .filter(|(_, s)| *s > 0.0)
                .collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
            ranked
                .into_iter()
                .take(n)
                .map(|(w, _)| w.to_string())
                .collect()
        };
        let hate = top(
            &|c| odds(c[0], totals[0], c[1] + c[2], totals[1] + totals[2]),
            LIST_HATE,
        );
        let offensive = top(
            &|c| odds(c[0] + c[1], totals[0] + totals[1], c[2], totals[2]),
            LIST_OFFENSIVE,
        );
        Self { hate, offensive }
    }

    /// The class of a message's words.
    pub fn predict(&self, words: &[String]) -> usize {
        let has = |list: &[String]| words.iter().any(|w| list.contains(w));
        if has(&self.hate) {
            0
        } else if has(&self.offensive) {
            1
        } else {
            NEITHER
        }
    }
}

/// The figures as a Markdown table (one row per class, then macro-F1 and accuracy).
pub fn table(name: &str, c: &Confusion) -> String {
    let mut out = format!("| {name} | precision | recall | F1 |\n|---|---|---|---|\n");
    for (k, class) in CLASSES.iter().enumerate() {
        let f = c.class(k);
        out.push_str(&format!(
            "| {class} | {:.3} | {:.3} | {:.3} |\n",
            f.precision, f.recall, f.f1
        ));
    }
    out.push_str(&format!(
        "| macro-F1 | | | {:.3} |\n| accuracy | | | {:.3} |\n",
        c.macro_f1(),
        c.accuracy()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_follow_their_definitions() {
        let mut c = Confusion::default();
        // 2 hate right, 1 hate called offensive, 1 offensive called hate, 3 neither right.
        for (t, p, n) in [(0, 0, 2), (0, 1, 1), (1, 0, 1), (2, 2, 3)] {
            for _ in 0..n {
                c.add(t, p);
            }
        }
        let hate = c.class(0);
        assert!((hate.precision - 2.0 / 3.0).abs() < 1e-9);
        assert!((hate.recall - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(c.class(1).f1, 0.0);
        assert!((c.accuracy() - 5.0 / 7.0).abs() < 1e-9);
        assert!((c.macro_f1() - (2.0 / 3.0 + 0.0 + 1.0) / 3.0).abs() < 1e-9);
    }

    #[test]
    fn folds_cover_every_example_once_in_near_equal_parts() {
        let f = folds(103, 5, 9);
        let mut sizes = [0; 5];
        for x in &f {
            sizes[*x] += 1;
        }
        assert!(sizes.iter().all(|s| *s == 20 || *s == 21), "{sizes:?}");
        assert_eq!(f, folds(103, 5, 9), "deterministic");
    }

    #[test]
    fn the_word_lists_take_the_words_that_mark_a_class() {
        let w = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let data: Vec<(Vec<String>, usize)> = (0..10)
            .flat_map(|_| {
                [
                    (w("you zorblat"), 0),
                    (w("grumfy day"), 1),
                    (w("nice day"), 2),
                ]
            })
            .collect();
        let refs: Vec<(&[String], usize)> = data.iter().map(|(x, y)| (x.as_slice(), *y)).collect();
        let list = WordList::derive(&refs);
        assert_eq!(list.predict(&w("a zorblat")), 0);
        assert_eq!(list.predict(&w("so grumfy")), 1);
        assert_eq!(list.predict(&w("nice")), 2);
    }
}
