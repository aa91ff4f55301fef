//! Channel search, `GET /api/search?q=`: full text over channel names, titles, descriptions
//! and categories, ranked by the database's own relevance, live channels first.
//!
//! The index is each database's own: on SQLite an FTS5 table (`channel_search`, external
//! content over `channels`, kept by triggers); on PostgreSQL a generated `tsvector` column
//! (`channels.search_doc`) with a GIN index. A sqlx migration runs the same file on both
//! databases, and neither's full-text DDL is valid on the other, so [`prepare`] creates them
//! (idempotently, once per start) after the portable migrations. Both tokenise without
//! stemming ("unicode61" and the "simple" configuration), and every query word matches as a
//! prefix, so "speed" finds "speedrun" on both alike.
//!
//! Weights: the name and the title count most, then the category, then the description.

use axum::extract::State as AxState;
use axum::response::{IntoResponse, Response};
use http_common::ApiError;
use serde::{Deserialize, Serialize};
use storage::{Backend, Store, StoreError};
use utoipa::{IntoParams, ToSchema};

use crate::{db, QueryParams, State};

/// Words of a query used, at most.
const MAX_WORDS: usize = 8;
/// Characters of a word used, at most.
const MAX_WORD: usize = 32;
/// Matches ranked by the database before live channels are put first.
const CANDIDATES: i64 = 200;

/// Create the search index of the store's database if it is not there (and fill it from the
/// channels). Called by [`crate::migrate`].
pub async fn prepare(store: &Store) -> Result<(), StoreError> {
    let pool = store.pool();
    match store.backend() {
        Backend::Sqlite => {
            let (exists,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' \
                 AND name = 'channel_search'",
            )
            .fetch_one(pool)
            .await?;
            if exists > 0 {
                return Ok(());
            }
            let mut tx = pool.begin().await?;
            for sql in SQLITE_INDEX {
                sqlx::query(sql).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
        Backend::Postgres => {
            let mut tx = pool.begin().await?;
            // Two nodes starting at once: one creates, the other waits and finds it made.
            sqlx::query("SELECT pg_advisory_xact_lock(7461636)")
                .execute(&mut *tx)
                .await?;
            for sql in POSTGRES_INDEX {
                sqlx::query(sql).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

const SQLITE_INDEX: [&str; 5] = [
    "CREATE VIRTUAL TABLE channel_search USING fts5(name, title, description, category, \
     content = 'channels', content_rowid = 'rowid', tokenize = 'unicode61 remove_diacritics 2')",
    "CREATE TRIGGER channel_search_insert AFTER INSERT ON channels BEGIN \
     INSERT INTO channel_search (rowid, name, title, description, category) \
     VALUES (new.rowid, new.name, new.title, new.description, new.category); END",
    "CREATE TRIGGER channel_search_delete AFTER DELETE ON channels BEGIN \
     INSERT INTO channel_search (channel_search, rowid, name, title, description, category) \
     VALUES ('delete', old.rowid, old.name, old.title, old.description, old.category); END",
    "CREATE TRIGGER channel_search_update AFTER UPDATE OF name, title, description, category \
     ON channels BEGIN \
     INSERT INTO channel_search (channel_search, rowid, name, title, description, category) \
     VALUES ('delete', old.rowid, old.name, old.title, old.description, old.category); \
     INSERT INTO channel_search (rowid, name, title, description, category) \
     VALUES (new.rowid, new.name, new.title, new.description, new.category); END",
    "INSERT INTO channel_search (channel_search) VALUES ('rebuild')",
];

const POSTGRES_INDEX: [&str; 2] = [
    "ALTER TABLE channels ADD COLUMN IF NOT EXISTS search_doc tsvector GENERATED ALWAYS AS (\
     setweight(to_tsvector('simple', name), 'A') || \
     setweight(to_tsvector('simple', title), 'A') || \
     setweight(to_tsvector('simple', category), 'B') || \
     setweight(to_tsvector('simple', description), 'C')) STORED",
    "CREATE INDEX IF NOT EXISTS channels_search ON channels USING GIN (search_doc)",
];

/// The words of a query: runs of letters and digits, lower-cased, at most 8 of at most 32
/// characters. Anything else (quotes, operators, punctuation) separates words, so no input
/// can reach either database's query syntax.
pub fn words(q: &str) -> Vec<String> {
    // Lower-cased first: a capital may lower to a letter and a combining mark ("İ").
    q.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.chars().take(MAX_WORD).collect())
        .take(MAX_WORDS)
        .collect()
}

/// The FTS5 query of `words`: every word, as a prefix.
fn fts5_query(words: &[String]) -> String {
    words
        .iter()
        .map(|w| format!("\"{w}\"*"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `to_tsquery` text of `words`: every word, as a prefix.
fn tsquery(words: &[String]) -> String {
    words
        .iter()
        .map(|w| format!("{w}:*"))
        .collect::<Vec<_>>()
        .join(" & ")
}

/// `?q=&limit=`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// What to look for: words (each matches as a prefix), at most 8 used.
    q: String,
    /// At most this many results (1 to 50; default 20).
    #[param(minimum = 1, maximum = 50)]
    limit: Option<i64>,
}

/// A channel found.
#[derive(Serialize, ToSchema)]
pub struct Found {
    /// Channel name.
    name: String,
    /// Title.
    title: String,
    /// Category.
    category: String,
    /// Owner's name (null for a channel made by the operator).
    #[schema(required = true)]
    owner: Option<String>,
    /// Someone is publishing now.
    live: bool,
    /// Viewers now.
    viewers: u64,
}

/// `GET /api/search` answer.
#[derive(Serialize, ToSchema)]
pub struct SearchOut {
    /// The words searched for.
    words: Vec<String>,
    /// Public channels matching every word: live ones first, each group by relevance.
    items: Vec<Found>,
}

/// `GET /api/search?q=`: public channels by name, title, description and category.
#[utoipa::path(
    get,
    path = "/api/search",
    tag = "channels",
    params(SearchQuery),
    responses(
        (status = 200, description = "Matching public channels, live first, then by relevance",
            body = SearchOut),
        (status = 400, description = "No letter or digit in q, or limit out of 1 to 50",
            body = crate::openapi::ErrorBody),
    )
)]
pub async fn search(
    AxState(st): AxState<State>,
    QueryParams(q): QueryParams<SearchQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=50).contains(&limit) {
        return Err(ApiError::BadRequest("limit: 1 to 50".into()));
    }
    let words = words(&q.q);
    if words.is_empty() {
        return Err(ApiError::BadRequest(
            "q: at least one word of letters or digits".into(),
        ));
    }
    type Row = (String, String, String, Option<String>);
    let rows: Vec<Row> = match st.store.backend() {
        Backend::Sqlite => sqlx::query_as(
            "SELECT c.name, c.title, c.category, u.name FROM channel_search s \
             JOIN channels c ON c.rowid = s.rowid LEFT JOIN users u ON u.id = c.owner_id \
             WHERE channel_search MATCH $1 AND c.private = 0 \
             ORDER BY bm25(channel_search, 10.0, 10.0, 1.0, 3.0), c.name LIMIT $2",
        )
        .bind(fts5_query(&words)),
        Backend::Postgres => sqlx::query_as(
            "SELECT c.name, c.title, c.category, u.name FROM channels c \
             LEFT JOIN users u ON u.id = c.owner_id \
             WHERE c.search_doc @@ to_tsquery('simple', $1) AND c.private = 0 \
             ORDER BY ts_rank(c.search_doc, to_tsquery('simple', $1)) DESC, c.name LIMIT $2",
        )
        .bind(tsquery(&words)),
    }
    .bind(CANDIDATES)
    .fetch_all(st.store.pool())
    .await
    .map_err(db)?;
    let live = st.live.channels().await;
    let mut items: Vec<Found> = rows
        .into_iter()
        .map(|(name, title, category, owner)| {
            let state = live
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| s.clone())
                .unwrap_or_default();
            let viewers = st.board.total(&name, state.viewers);
            Found {
                name,
                title,
                category,
                owner,
                live: state.live,
                viewers,
            }
        })
        .collect();
    // Stable: each group keeps the database's order.
    items.sort_by_key(|f| !f.live);
    items.truncate(limit as usize);
    Ok(axum::Json(SearchOut { words, items }).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn words_are_letters_and_digits_lower_cased() {
        assert_eq!(words("Speed-Run  #42"), ["speed", "run", "42"]);
        assert_eq!(words("Café ÜBER"), ["café", "über"]);
        assert_eq!(words("\"a\" OR b* NEAR(c)"), ["a", "or", "b", "near", "c"]);
        assert!(words(" -*\"' ").is_empty());
        assert_eq!(words(&"w ".repeat(20)).len(), MAX_WORDS);
    }

    #[test]
    fn every_word_is_a_prefix_on_both_databases() {
        let w = words("speed chess");
        assert_eq!(fts5_query(&w), "\"speed\"* \"chess\"*");
        assert_eq!(tsquery(&w), "speed:* & chess:*");
    }

    proptest! {
        // Whatever is typed, a word holds only letters and digits: nothing a query syntax
        // reads as an operator or a quote.
        #[test]
        fn no_input_reaches_the_query_syntax(q in "\\PC{0,80}") {
            for w in words(&q) {
                prop_assert!(!w.is_empty() && w.chars().all(char::is_alphanumeric), "{w:?}");
            }
        }
    }
}
