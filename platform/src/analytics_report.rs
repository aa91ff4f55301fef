//! `GET /api/channels/{name}/analytics?from=&to=`: the owner's numbers for a time range, read
//! from what [`crate::analytics`] records: live viewers now (summed over the cluster), peak
//! concurrency, unique viewers, watch time (overall and per stream), chat messages per minute,
//! and the retention series (viewers over time).

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::extract::{Path, State as AxState};
use axum::response::{IntoResponse, Response};
use http_common::ApiError;
use serde::{Deserialize, Serialize};

use crate::accounts::User;
use crate::channels::owned;
use crate::openapi::{ChannelPath, ErrorBody, NoSuchChannel, NotOwner, Unauthorized};
use crate::{db, now, QueryParams, State};

/// The longest range one request may cover.
pub const MAX_RANGE_SECS: i64 = 93 * 24 * 3600;
/// The retention series has at most this many points; longer ranges keep each bucket's peak.
pub const MAX_POINTS: usize = 720;
/// An open session whose node has not refreshed it for this long ends at its last refresh
/// (the node is gone and will close it when it comes back).
const STALE_SECS: i64 = 120;

/// `?from=&to=`, seconds since the Unix epoch. Defaults: the last 24 hours up to now.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Range {
    /// Start (inclusive).
    #[param(minimum = 0)]
    pub from: Option<i64>,
    /// End (exclusive).
    #[param(minimum = 1)]
    pub to: Option<i64>,
}

/// One point of a time series.
#[derive(Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Point {
    /// Start of the bucket, seconds since the Unix epoch.
    pub t: i64,
    /// Its value.
    pub value: u64,
}

/// Numbers of one stream (publishing session) in the range.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StreamStats {
    /// Stream record id.
    pub id: String,
    /// When it went live.
    pub started_at: i64,
    /// When it ended (`null` while live).
    pub ended_at: Option<i64>,
    /// Most concurrent viewers sampled during it.
    pub peak_viewers: u64,
    /// Distinct viewers.
    pub unique_viewers: u64,
    /// Viewer sessions.
    pub sessions: u64,
    /// Seconds watched, summed over its viewers.
    pub watch_time_secs: u64,
    /// Its chat engagement (messages per viewer, chatters, mood; a 0-100 score).
    pub engagement: crate::engagement::Engagement,
}

/// The answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// Channel name.
    pub channel: String,
    /// The range, as applied.
    pub from: i64,
    /// End of the range.
    pub to: i64,
    /// Viewers now, over every node.
    pub live_viewers: u64,
    /// Most concurrent viewers sampled in the range.
    pub peak_viewers: u64,
    /// When that peak was sampled.
    pub peak_at: Option<i64>,
    /// Distinct viewers (by client address and user agent, hashed) in the range.
    pub unique_viewers: u64,
    /// Viewer sessions that overlap the range.
    pub sessions: u64,
    /// Seconds watched in the range, summed over sessions.
    pub watch_time_secs: u64,
    /// Chat messages sent in the range.
    pub chat_messages: u64,
    /// Chat messages per minute (minutes without messages are left out).
    pub chat_per_minute: Vec<Point>,
    /// Viewers over time: the sampled concurrent viewers (a bucket's peak on long ranges).
    pub retention: Vec<Point>,
    /// Streams that overlap the range, oldest first.
    pub streams: Vec<StreamStats>,
}

/// `stream_id, viewer, started_at, ended_at, last_seen` of a `viewer_sessions` row.
type SessionRow = (Option<String>, String, i64, Option<i64>, i64);

/// A viewer session as stored.
struct Session {
    stream: Option<String>,
    viewer: String,
    start: i64,
    end: i64,
}

/// Sums over a set of sessions.
#[derive(Default)]
struct Totals {
    viewers: HashSet<String>,
    sessions: u64,
    watched: i64,
}

impl Totals {
    fn add(&mut self, s: &Session, from: i64, to: i64) {
        self.viewers.insert(s.viewer.clone());
        self.sessions += 1;
        self.watched += (s.end.min(to) - s.start.max(from)).max(0);
    }
}

/// A channel's range, for rows with `started_at` and `ended_at` (NULL: still open, until now).
struct Span<'a> {
    channel: &'a str,
    from: i64,
    to: i64,
    now: i64,
}

impl Span<'_> {
    /// The rows `select` (`SELECT ... FROM table`) gives that overlap the range, oldest first.
    async fn rows<T>(&self, pool: &sqlx::AnyPool, select: &str) -> Result<Vec<T>, ApiError>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    {
        let sql = format!(
            "{select} WHERE channel = $1 AND started_at < $2 AND COALESCE(ended_at, $4) >= $3 \
             ORDER BY started_at"
        );
        sqlx::query_as(&sql)
            .bind(self.channel)
            .bind(self.to)
            .bind(self.from)
            .bind(self.now)
            .fetch_all(pool)
            .await
            .map_err(db)
    }
}

/// The range a request asks for, checked.
pub fn bounds(range: &Range, now: i64) -> Result<(i64, i64), ApiError> {
    let to = range.to.unwrap_or(now);
    // Saturating: a `to` near i64::MIN must get the 400 below, not an overflow.
    let from = range.from.unwrap_or(to.saturating_sub(24 * 3600));
    if from < 0 || to <= from {
        return Err(ApiError::BadRequest(
            "from and to are seconds since the Unix epoch, with from < to".into(),
        ));
    }
    if to - from > MAX_RANGE_SECS {
        return Err(ApiError::BadRequest(format!(
            "the range may cover at most {} days",
            MAX_RANGE_SECS / 86_400
        )));
    }
    Ok((from, to))
}

/// At most `max` points: consecutive samples are merged into buckets of equal width, each
/// keeping its peak.
pub fn downsample(samples: &[(i64, u64)], from: i64, to: i64, max: usize) -> Vec<Point> {
    if samples.len() <= max {
        return samples
            .iter()
            .map(|&(t, value)| Point { t, value })
            .collect();
    }
    let width = ((to - from) / i64::try_from(max).unwrap_or(i64::MAX)).max(1);
    let mut buckets: BTreeMap<i64, u64> = BTreeMap::new();
    for &(t, v) in samples {
        let b = from + (t - from) / width * width;
        let e = buckets.entry(b).or_insert(0);
        *e = (*e).max(v);
    }
    buckets
        .into_iter()
        .map(|(t, value)| Point { t, value })
        .collect()
}

/// `GET /api/channels/{name}/analytics?from=&to=`: the owner only.
#[utoipa::path(
    get,
    path = "/api/channels/{name}/analytics",
    tag = "analytics",
    params(ChannelPath, Range),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The channel's numbers for the range", body = Report),
        (status = 400, description = "A bad range (from < to, at most 93 days) or query string",
            body = ErrorBody),
        Unauthorized,
        NotOwner,
        NoSuchChannel,
    )
)]
pub async fn analytics(
    AxState(st): AxState<State>,
    user: User,
    Path(name): Path<String>,
    QueryParams(range): QueryParams<Range>,
) -> Result<Response, ApiError> {
    owned(&st, &name, &user).await?;
    let now = now();
    let (from, to) = bounds(&range, now)?;
    let pool = st.store.pool();

    let span = Span {
        channel: &name,
        from,
        to,
        now,
    };
    let rows: Vec<SessionRow> = span
        .rows(
            pool,
            "SELECT stream_id, viewer, started_at, ended_at, last_seen FROM viewer_sessions",
        )
        .await?;
    let sessions: Vec<Session> = rows
        .into_iter()
        .map(|(stream, viewer, start, ended, seen)| Session {
            stream,
            viewer,
            start,
            end: ended.unwrap_or(if now - seen > STALE_SECS { seen } else { now }),
        })
        .collect();

    let samples: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT t, viewers FROM viewer_samples WHERE channel = $1 AND t >= $2 AND t < $3 \
         ORDER BY t",
    )
    .bind(&name)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let samples: Vec<(i64, u64)> = samples
        .into_iter()
        .map(|(t, v)| (t, u64::try_from(v).unwrap_or(0)))
        .collect();

    let said: Vec<(i64, String, f64)> = sqlx::query_as(
        "SELECT sent_at_ms, user_id, sentiment_score FROM chat_messages \
         WHERE channel = $1 AND sent_at_ms >= $2 AND sent_at_ms < $3",
    )
    .bind(&name)
    .bind(from.saturating_mul(1000))
    .bind(to.saturating_mul(1000))
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let said: Vec<crate::engagement::Said> = said
        .into_iter()
        .map(|(at_ms, user, sentiment)| crate::engagement::Said {
            at_ms,
            user,
            sentiment,
        })
        .collect();
    // Messages per minute (minutes without messages left out), from the same rows.
    let mut per_minute: std::collections::BTreeMap<i64, u64> = std::collections::BTreeMap::new();
    for m in &said {
        *per_minute.entry(m.at_ms.div_euclid(60_000)).or_default() += 1;
    }
    let chat_per_minute: Vec<Point> = per_minute
        .into_iter()
        .map(|(m, n)| Point {
            t: m * 60,
            value: n,
        })
        .collect();

    let streams: Vec<(String, i64, Option<i64>)> = span
        .rows(pool, "SELECT id, started_at, ended_at FROM streams")
        .await?;

    let mut all = Totals::default();
    let mut per_stream: HashMap<&str, Totals> = HashMap::new();
    for s in &sessions {
        all.add(s, from, to);
        if let Some(id) = &s.stream {
            per_stream.entry(id).or_default().add(s, from, to);
        }
    }
    let peak = samples
        .iter()
        .max_by_key(|&&(t, v)| (v, std::cmp::Reverse(t)));
    let here = st
        .live
        .channels()
        .await
        .into_iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, s)| s.viewers);

    let streams = streams
        .into_iter()
        .map(|(id, started_at, ended_at)| {
            let end = ended_at.unwrap_or(now);
            let t = per_stream.remove(id.as_str()).unwrap_or_default();
            let during: Vec<crate::engagement::Said> = said
                .iter()
                .filter(|s| s.at_ms >= started_at * 1000 && s.at_ms < end * 1000)
                .cloned()
                .collect();
            let watched = u64::try_from(t.watched).unwrap_or(0);
            let viewers = t.viewers.len() as u64;
            StreamStats {
                engagement: crate::engagement::engagement(
                    &during,
                    started_at.max(from),
                    end.min(to),
                    watched,
                    viewers,
                ),
                peak_viewers: samples
                    .iter()
                    .filter(|&&(t, _)| t >= started_at - 1 && t <= end)
                    .map(|&(_, v)| v)
                    .max()
                    .unwrap_or(0),
                unique_viewers: viewers,
                sessions: t.sessions,
                watch_time_secs: watched,
                id,
                started_at,
                ended_at,
            }
        })
        .collect();

    let report = Report {
        live_viewers: st.board.total(&name, here),
        peak_viewers: peak.map_or(0, |p| p.1),
        peak_at: peak.map(|p| p.0),
        unique_viewers: all.viewers.len() as u64,
        sessions: all.sessions,
        watch_time_secs: u64::try_from(all.watched).unwrap_or(0),
        chat_messages: chat_per_minute.iter().map(|p| p.value).sum(),
        chat_per_minute,
        retention: downsample(&samples, from, to, MAX_POINTS),
        streams,
        channel: name,
        from,
        to,
    };
    Ok(axum::Json(report).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_defaults_to_the_last_day_and_rejects_backwards_or_huge_ones() {
        let r = |from, to| Range { from, to };
        assert_eq!(
            bounds(&r(None, None), 100_000).ok(),
            Some((13_600, 100_000))
        );
        assert_eq!(bounds(&r(Some(5), Some(9)), 0).ok(), Some((5, 9)));
        assert!(bounds(&r(Some(9), Some(9)), 0).is_err());
        assert!(bounds(&r(Some(10), Some(9)), 0).is_err());
        assert!(bounds(&r(Some(-1), Some(9)), 0).is_err());
        assert!(bounds(&r(Some(0), Some(MAX_RANGE_SECS + 1)), 0).is_err());
        // Found by schemathesis: the default `from` overflowed for a `to` near i64::MIN.
        assert!(bounds(&r(None, Some(i64::MIN)), 0).is_err());
        assert!(bounds(&r(Some(0), Some(i64::MAX)), 0).is_err());
    }

    #[test]
    fn a_long_series_keeps_each_buckets_peak() {
        let samples: Vec<(i64, u64)> = (0..100).map(|i| (i * 10, (i % 7) as u64)).collect();
        let short = downsample(&samples, 0, 1000, 100);
        assert_eq!(short.len(), 100);
        let long = downsample(&samples, 0, 1000, 10);
        assert_eq!(long.len(), 10);
        // Each 100 s bucket holds 10 samples of i % 7: its peak is 6.
        assert!(long.iter().all(|p| p.value == 6), "{long:?}");
        assert_eq!(long[3].t, 300);
    }

    #[test]
    fn watch_time_is_clipped_to_the_range() {
        let mut t = Totals::default();
        let s = |start, end| Session {
            stream: None,
            viewer: format!("{start}"),
            start,
            end,
        };
        t.add(&s(0, 100), 50, 80);
        t.add(&s(60, 70), 50, 80);
        t.add(&s(90, 95), 50, 80);
        assert_eq!(t.watched, 30 + 10);
        assert_eq!(t.sessions, 3);
        assert_eq!(t.viewers.len(), 3);
    }
}
