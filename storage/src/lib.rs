//! AeThex LIVE storage: the database, on SQLite (the default: a file in the data directory,
//! WAL) or PostgreSQL (`database.url = "postgres://..."`), through sqlx's `Any` driver, so the
//! same queries and the same tests run on both with no code change; and the tables the media
//! side reads: channels and their stream keys, and stage invites.
//!
//! Each crate owns its tables: their migrations (portable SQL) sit beside their queries. Here,
//! in `migrations/`, are those of the channels that [`channels`] reads and writes (0001-0003:
//! 0003 also creates the platform's users, sessions and follows, because it adds the
//! `channels.owner_id` that [`Store::owner_of`] reads, and a migration cannot be split without
//! changing its checksum), and of the stage invites that [`stage`] reads and writes (0009,
//! read by signaling's WHIP/WHEP and written by the platform's API and the CLI); the platform
//! runs its own (0004-0008 and later) after [`Store::open`] ran these. Both share sqlx's `_sqlx_migrations` table, so each migrator ignores the other's
//! versions. A store works alone: signaling and the channel CLI need nothing else.
#![warn(missing_docs)]

pub mod channels;
pub mod stage;
pub mod testing;

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use channels::{key_fingerprint, StreamKey, KEY_PREFIX};
pub use stage::{check_invite, Invite, InviteToken, NewInvite, INVITE_TTL, MAX_GUESTS};

/// Storage errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The channel name is taken.
    #[error("channel {0} already exists")]
    Exists(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The OS random source failed.
    #[error("random source: {0}")]
    Random(String),
    /// The database URL names no supported database.
    #[error("unsupported database URL (use sqlite://PATH or postgres://...): {0}")]
    Url(String),
}

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (a file, WAL).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// Now, in Unix seconds (the clock invites and keys are checked against).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `url` without its password, for errors and logs.
pub fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***@{}", &url[at + 1..]),
        _ => url.to_string(),
    }
}

impl Store {
    /// Open (creating if needed) `aethex.db` in `data_dir` and run this crate's migrations.
    pub async fn open_data_dir(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
        let url = format!("sqlite://{}", data_dir.join("aethex.db").display());
        Self::open(&url).await
    }

    /// Open a database by URL (`sqlite://path`, `sqlite::memory:`, `postgres://...`) and run
    /// this crate's migrations (the platform runs its own after: `platform::migrate`).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::Url(redacted(url)));
        };
        let memory = url.contains(":memory:");
        let url = match backend {
            // Create the file if missing.
            Backend::Sqlite if !memory && !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let options: AnyConnectOptions = url.parse()?;
        // Every connection to `:memory:` is its own database: keep one.
        let max = match backend {
            Backend::Sqlite if memory => 1,
            Backend::Sqlite => 4,
            Backend::Postgres => 16,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        if !memory {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        // The platform's migrations share `_sqlx_migrations`: ignore its versions.
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.set_ignore_missing(true);
        migrator.run(&pool).await?;
        Ok(Self { pool, backend })
    }

    /// The connection pool, for the platform's own queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The database in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A cheap liveness check of the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Close the pool (shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
