//! Test databases, real ones: a SQLite file in a fresh temporary directory, and a fresh
//! database on the PostgreSQL server of the machine (`AETHEX_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres` for the server, on which a database per
//! test is created). A missing PostgreSQL fails the test with the fix; it never skips.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::Store;

/// A database for one test: reopen it to prove what survives a restart. Dropped, it is
/// removed (the PostgreSQL database, or the SQLite file's directory).
pub struct TestDb {
    /// Its URL.
    pub url: String,
    /// Which backend ("sqlite" or "postgres"), for messages.
    pub kind: &'static str,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(std::path::PathBuf),
    Database(String),
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Database(name) => {
                // Drop runs inside the test's runtime: use a thread with its own.
                let name = name.clone();
                let _ = std::thread::spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    rt.block_on(async {
                        use sqlx::Connection;
                        if let Ok(mut admin) =
                            sqlx::PgConnection::connect(&postgres_server_url()).await
                        {
                            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                            let _ = sqlx::query(&sql).execute(&mut admin).await;
                            let _ = admin.close().await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{tag}_{}_{nanos}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// The PostgreSQL server the tests use.
pub fn postgres_server_url() -> String {
    std::env::var("AETHEX_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl TestDb {
    /// A database of `kind` (`"sqlite"` or `"postgres"`), for [`on_both_databases!`].
    pub async fn of_kind(kind: &str) -> Self {
        if kind == "sqlite" {
            Self::sqlite()
        } else {
            Self::postgres().await
        }
    }

    /// A SQLite file in a fresh temporary directory.
    pub fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(unique("aethex-db"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self {
            url: format!("sqlite://{}", dir.join("aethex.db").display()),
            kind: "sqlite",
            cleanup: Cleanup::Dir(dir),
        }
    }

    /// A fresh database on the PostgreSQL server.
    pub async fn postgres() -> Self {
        use sqlx::Connection;
        let server = postgres_server_url();
        let name = unique("aethex_test");
        let mut admin = sqlx::PgConnection::connect(&server)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "these tests need PostgreSQL at {} ({e}); start it (service postgresql start) \
                 or set AETHEX_TEST_POSTGRES_URL",
                    crate::redacted(&server)
                )
            });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("CREATE DATABASE");
        let _ = admin.close().await;
        let base = server
            .rsplit_once('/')
            .map_or(server.as_str(), |(b, _)| b)
            .to_string();
        Self {
            url: format!("{base}/{name}"),
            kind: "postgres",
            cleanup: Cleanup::Database(name),
        }
    }

    /// Open (or reopen) the store: storage's migrations only (a crate with its own runs them
    /// on the result, or uses `on_both_databases!(migrate = ...; ...)`).
    pub async fn open(&self) -> Store {
        Store::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", self.kind))
    }
}

/// Run the async test body `$body` (a function of `Store` and `&TestDb`) once on SQLite and
/// once on PostgreSQL, as two `#[tokio::test]`s in modules `sqlite` and `postgres`.
///
/// A crate with migrations of its own (the platform) names the function that runs them first:
/// `on_both_databases!(migrate = platform::migrate; test_a, test_b)`; each test then gets a
/// store migrated to both (`migrate` is an `async fn(&Store) -> Result<(), E: Display>`).
#[macro_export]
macro_rules! on_both_databases {
    (@kind $kind:ident, $migrate:path; $($name:ident),*) => {
        mod $kind {
            $(#[tokio::test] async fn $name() {
                let db = $crate::testing::TestDb::of_kind(stringify!($kind)).await;
                let store = db.open().await;
                $migrate(&store)
                    .await
                    .unwrap_or_else(|e| panic!("{}: migrations: {e}", db.kind));
                super::$name(store, &db).await
            })*
        }
    };
    (migrate = $migrate:path; $($name:ident),* $(,)?) => {
        $crate::on_both_databases!(@kind sqlite, $migrate; $($name),*);
        $crate::on_both_databases!(@kind postgres, $migrate; $($name),*);
    };
    ($($name:ident),* $(,)?) => {
        $crate::on_both_databases!(migrate = $crate::testing::no_migrations; $($name),*);
    };
}

/// For [`on_both_databases!`] without migrations of the caller's own: nothing to run.
pub async fn no_migrations(_: &Store) -> Result<(), std::convert::Infallible> {
    Ok(())
}
