//! A stream's chat engagement (docs/moderation.md, "Engagement"): how much its viewers chat,
//! how many of them, and in what mood, as one score from 0 to 100.
//!
//! - `messages_per_minute_per_viewer`: messages / minutes live / mean concurrent viewers
//!   (watch time / time live, at least 1);
//! - `chatter_share`: distinct chatters / distinct viewers (at most 1);
//! - `sentiment_mean`: the mean polarity of its messages (-1 to 1), and `sentiment_trend`: the
//!   mean of the later half of its messages minus that of the earlier half;
//! - `score` = 100 x (0.5 x min(1, rate / 0.1) + 0.3 x chatter share + 0.2 x (sentiment
//!   mean + 1) / 2), rounded; 0 for a stream without chat. A rate of 0.1 (each viewer one
//!   message every ten minutes) counts as full: lively chats on the big platforms run at
//!   0.05-0.2.

use serde::Serialize;

/// The rate that counts as fully engaged, in messages per minute per viewer.
const FULL_RATE: f64 = 0.1;

/// One chat message, for engagement.
#[derive(Debug, Clone, PartialEq)]
pub struct Said {
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// Who (the user id).
    pub user: String,
    /// Its sentiment polarity.
    pub sentiment: f64,
}

/// One stream's engagement.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Engagement {
    /// Messages per minute per mean concurrent viewer.
    pub messages_per_minute_per_viewer: f64,
    /// Distinct chatters over distinct viewers (0 to 1).
    pub chatter_share: f64,
    /// Mean sentiment polarity of its messages (-1 to 1; 0 without messages).
    pub sentiment_mean: f64,
    /// Later half's mean sentiment minus the earlier half's.
    pub sentiment_trend: f64,
    /// The engagement score, 0 to 100 (the formula is in docs/moderation.md).
    pub score: u8,
}

/// The engagement of a stream live from `start` to `end` (seconds) with `watched_secs` of
/// watch time by `viewers` distinct viewers, whose chat was `chat` (any order).
pub fn engagement(
    chat: &[Said],
    start: i64,
    end: i64,
    watched_secs: u64,
    viewers: u64,
) -> Engagement {
    let live = (end - start).max(1) as f64;
    let minutes = (live / 60.0).max(1.0);
    let mean_viewers = (watched_secs as f64 / live).max(1.0);
    let rate = chat.len() as f64 / minutes / mean_viewers;
    let mut chatters: Vec<&str> = chat.iter().map(|s| s.user.as_str()).collect();
    chatters.sort_unstable();
    chatters.dedup();
    let chatter_share = (chatters.len() as f64 / viewers.max(1) as f64).min(1.0);
    let mut by_time: Vec<&Said> = chat.iter().collect();
    by_time.sort_by_key(|s| s.at_ms);
    let mean = |s: &[&Said]| {
        if s.is_empty() {
            0.0
        } else {
            s.iter().map(|x| x.sentiment).sum::<f64>() / s.len() as f64
        }
    };
    let sentiment_mean = mean(&by_time);
    let (early, late) = by_time.split_at(by_time.len() / 2);
    let sentiment_trend = if early.is_empty() {
        0.0
    } else {
        mean(late) - mean(early)
    };
    let score = if chat.is_empty() {
        0.0
    } else {
        100.0
            * (0.5 * (rate / FULL_RATE).min(1.0)
                + 0.3 * chatter_share
                + 0.2 * (sentiment_mean.clamp(-1.0, 1.0) + 1.0) / 2.0)
    };
    let round3 = |x: f64| (x * 1000.0).round() / 1000.0;
    Engagement {
        messages_per_minute_per_viewer: round3(rate),
        chatter_share: round3(chatter_share),
        sentiment_mean: round3(sentiment_mean),
        sentiment_trend: round3(sentiment_trend),
        score: score.round().clamp(0.0, 100.0) as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(at_s: i64, user: &str, sentiment: f64) -> Said {
        Said {
            at_ms: at_s * 1000,
            user: user.into(),
            sentiment,
        }
    }

    #[test]
    fn the_score_follows_its_formula() {
        // 10 minutes live, 2 viewers throughout (1,200 s watched), 4 messages from one of
        // them: 0.2 per minute per viewer (full), half the viewers chatted, mood 0.5 rising.
        let chat = [
            said(60, "a", 0.0),
            said(120, "a", 0.0),
            said(300, "a", 1.0),
            said(400, "a", 1.0),
        ];
        let e = engagement(&chat, 0, 600, 1200, 2);
        assert_eq!(e.messages_per_minute_per_viewer, 0.2);
        assert_eq!(e.chatter_share, 0.5);
        assert_eq!((e.sentiment_mean, e.sentiment_trend), (0.5, 1.0));
        // 100 x (0.5 x 1 + 0.3 x 0.5 + 0.2 x 0.75) = 80
        assert_eq!(e.score, 80);
    }

    #[test]
    fn a_silent_stream_scores_zero_and_a_lone_message_has_no_trend() {
        assert_eq!(engagement(&[], 0, 600, 600, 1).score, 0);
        let one = engagement(&[said(5, "a", -1.0)], 0, 600, 0, 0);
        assert_eq!(one.sentiment_trend, 0.0);
        assert_eq!(one.chatter_share, 1.0);
        // 1 message in 10 minutes with at least one viewer: 0.1 (full), share 1, mood -1.
        assert_eq!(one.score, 80);
    }
}
