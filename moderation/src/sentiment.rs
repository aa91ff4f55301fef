//! Sentiment by lexicon: positive and negative words and emoji (the lists below, written
//! here), a negation ("not", "never", "n't", ...) turning the next three words around, and a
//! few intensifiers. There is no labelled sentiment data here to train or measure on, so this
//! is a plain rule, tested on constructed messages (docs/moderation.md says so).

use crate::text::words;

/// A message's sentiment label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sentiment {
    /// More positive than negative.
    Positive,
    /// Neither, or balanced.
    Neutral,
    /// More negative than positive.
    Negative,
}

impl Sentiment {
    /// The label's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Sentiment::Positive => "positive",
            Sentiment::Neutral => "neutral",
            Sentiment::Negative => "negative",
        }
    }
}

const POSITIVE: &[&str] = &[
    "good",
    "great",
    "awesome",
    "amazing",
    "love",
    "loved",
    "loving",
    "lovely",
    "nice",
    "cool",
    "best",
    "beautiful",
    "fun",
    "funny",
    "happy",
    "glad",
    "thanks",
    "thank",
    "ty",
    "wow",
    "excellent",
    "perfect",
    "fantastic",
    "wonderful",
    "brilliant",
    "epic",
    "legend",
    "gg",
    "congrats",
    "congratulations",
    "yay",
    "lol",
    "lmao",
    "haha",
    "hype",
    "pog",
    "poggers",
    "sweet",
    "enjoy",
    "enjoyed",
    "like",
    "liked",
    "win",
    "won",
    "winning",
    "clutch",
    "insane",
    "incredible",
    "respect",
    "welcome",
    "cute",
    "wholesome",
    "proud",
    "favorite",
    "favourite",
    "blessed",
    "beast",
    "goat",
    "fire",
    "lit",
    "smart",
    "talented",
    "kind",
    "helpful",
    "yes",
    "❤",
    "♥",
    "😀",
    "😃",
    "😄",
    "😁",
    "😆",
    "😊",
    "😍",
    "🥰",
    "😘",
    "👍",
    "👏",
    "🎉",
    "💯",
    "🔥",
    "😂",
    "🤣",
    "🙌",
    "💪",
    "😎",
    "✨",
    "🙏",
];

const NEGATIVE: &[&str] = &[
    "bad",
    "awful",
    "terrible",
    "horrible",
    "worst",
    "hate",
    "hated",
    "hating",
    "sucks",
    "suck",
    "boring",
    "bored",
    "sad",
    "angry",
    "mad",
    "annoying",
    "annoyed",
    "ugly",
    "stupid",
    "dumb",
    "trash",
    "garbage",
    "lame",
    "cringe",
    "fail",
    "failed",
    "lost",
    "lose",
    "losing",
    "wrong",
    "broken",
    "lag",
    "laggy",
    "toxic",
    "disgusting",
    "gross",
    "pathetic",
    "useless",
    "rip",
    "sorry",
    "cry",
    "crying",
    "hurt",
    "pain",
    "sick",
    "tired",
    "scam",
    "ruined",
    "mess",
    "disappointed",
    "disappointing",
    "never",
    "no",
    "ugh",
    "wtf",
    "idiot",
    "loser",
    "fake",
    "😢",
    "😭",
    "😡",
    "😠",
    "👎",
    "💔",
    "😞",
    "😒",
    "🙄",
    "😤",
    "🤮",
    "😩",
];

/// Words that turn the next few words around ("not good" is negative).
const NEGATIONS: &[&str] = &[
    "not", "no", "never", "dont", "don't", "didn't", "isn't", "wasn't", "can't", "cannot", "won't",
    "aint", "ain't", "nothing", "nobody", "without",
];
/// Words that make the next one count double.
const INTENSIFIERS: &[&str] = &["very", "so", "really", "super", "extremely", "too", "soo"];

/// How many words after a negation it turns around.
const NEGATION_REACH: usize = 3;
/// A polarity at or beyond this (either sign) is a label; within it, neutral.
const THRESHOLD: f32 = 0.15;

/// The sentiment of `text` and its polarity in -1 (negative) to 1 (positive).
pub fn sentiment(text: &str) -> (Sentiment, f32) {
    let words = words(text);
    let mut sum = 0f32;
    let mut hits = 0u32;
    let mut negated = 0usize;
    let mut boost = 1f32;
    for w in &words {
        let w = w.as_str();
        let value = if POSITIVE.contains(&w) {
            1.0
        } else if NEGATIVE.contains(&w) && !NEGATIONS.contains(&w) {
            -1.0
        } else {
            0.0
        };
        if value != 0.0 {
            let sign = if negated > 0 { -0.5 } else { 1.0 };
            sum += value * sign * boost;
            hits += 1;
        }
        boost = if INTENSIFIERS.contains(&w) { 2.0 } else { 1.0 };
        negated = if NEGATIONS.contains(&w) {
            NEGATION_REACH
        } else {
            negated.saturating_sub(1)
        };
    }
    if hits == 0 {
        return (Sentiment::Neutral, 0.0);
    }
    // Scaled by the message's length, so one "nice" in a paragraph weighs less than alone.
    let polarity = (sum / (words.len() as f32).sqrt().max(1.0)).clamp(-1.0, 1.0);
    let label = if polarity >= THRESHOLD {
        Sentiment::Positive
    } else if polarity <= -THRESHOLD {
        Sentiment::Negative
    } else {
        Sentiment::Neutral
    };
    (label, polarity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn praise_complaints_negations_and_plain_talk_get_their_labels() {
        for (text, want) in [
            ("this stream is awesome", Sentiment::Positive),
            ("GG that was insane 🔥🔥", Sentiment::Positive),
            ("the audio is terrible and laggy", Sentiment::Negative),
            ("not good at all", Sentiment::Negative),
            ("not bad", Sentiment::Positive),
            ("what time does the stream start", Sentiment::Neutral),
            ("", Sentiment::Neutral),
        ] {
            assert_eq!(sentiment(text).0, want, "{text}");
        }
        let (_, strong) = sentiment("so awesome");
        let (_, plain) = sentiment("awesome");
        assert!(strong >= plain && (-1.0..=1.0).contains(&strong));
    }
}
