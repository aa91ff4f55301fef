//! AeThex LIVE chat scoring, sans-IO (docs/moderation.md): every chat message gets a toxicity
//! label (`hate`, `offensive`, `neither`) with a score, and a sentiment (`positive`,
//! `neutral`, `negative`) with a polarity, before it is broadcast.
//!
//! - [`text`]: normalisation and words;
//! - [`features`]: hashed word, word-pair and character n-gram features;
//! - [`model`]: the toxicity model (logistic regression, trained by `train-moderation` on
//!   `../shared/data/chat-moderation/train.csv`; its quantised weights ship in the binary,
//!   `model/toxicity.bin`, and nothing is downloaded at run time);
//! - [`sentiment`]: the sentiment lexicon;
//! - [`eval`], [`dataset`]: cross-validation, the word-list baseline, the CSV reader.
#![warn(missing_docs)]

pub mod dataset;
pub mod eval;
pub mod features;
pub mod model;
pub mod sentiment;
pub mod text;

use std::sync::OnceLock;

pub use model::{Model, ModelError, CLASSES};
pub use sentiment::Sentiment;

/// The weights trained by `train-moderation`, as committed.
const BUILTIN: &[u8] = include_bytes!("../model/toxicity.bin");

/// One message's scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// `hate`, `offensive` or `neither`: the most likely class.
    pub toxicity: &'static str,
    /// The probability that the message is hate or offensive (0 to 1).
    pub toxicity_score: f32,
    /// The sentiment label.
    pub sentiment: Sentiment,
    /// The sentiment's polarity, -1 (negative) to 1 (positive).
    pub sentiment_score: f32,
}

/// Scores messages with a toxicity model.
#[derive(Debug, Clone)]
pub struct Scorer {
    model: Model,
}

impl Scorer {
    /// A scorer with `model`.
    pub fn new(model: Model) -> Self {
        Self { model }
    }

    /// The scorer with the weights built into this binary.
    pub fn builtin() -> Result<&'static Scorer, ModelError> {
        static BUILT: OnceLock<Result<Scorer, ModelError>> = OnceLock::new();
        BUILT
            .get_or_init(|| Model::from_bytes(BUILTIN).map(Scorer::new))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The scores of `text`.
    pub fn score(&self, text: &str) -> Scores {
        let p = self.model.probabilities(&features::features(text));
        let (sentiment, polarity) = sentiment::sentiment(text);
        Scores {
            toxicity: CLASSES[model::argmax(p)],
            toxicity_score: p[0] + p[1],
            sentiment,
            sentiment_score: polarity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_model_loads_and_tells_abuse_from_plain_chat() {
        let scorer = Scorer::builtin().expect("model/toxicity.bin is a trained model");
        let plain = scorer.score("what game are you playing next week?");
        assert_eq!(plain.toxicity, "neither", "{plain:?}");
        assert!(plain.toxicity_score < 0.5, "{plain:?}");
        let abuse = scorer.score("shut up you stupid bitch");
        assert_ne!(abuse.toxicity, "neither", "{abuse:?}");
        assert!(abuse.toxicity_score > 0.5, "{abuse:?}");
        assert_eq!(
            scorer.score("this is awesome").sentiment,
            Sentiment::Positive
        );
    }

    proptest::proptest! {
        #[test]
        fn any_text_gets_scores_in_their_ranges(text in "\\PC{0,120}") {
            let s = Scorer::builtin().unwrap().score(&text);
            proptest::prop_assert!((0.0..=1.0001).contains(&s.toxicity_score));
            proptest::prop_assert!((-1.0..=1.0).contains(&s.sentiment_score));
            proptest::prop_assert!(CLASSES.contains(&s.toxicity));
        }
    }
}
