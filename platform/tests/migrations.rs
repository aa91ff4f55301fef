//! The migrations are split by owner, storage's (0001-0003, 0009) and the platform's (0004-0008, 0010-0011), over
//! one `_sqlx_migrations` table. A database migrated before the split, by one migrator holding
//! all of them, keeps working, and so does a binary from before the split on a database made
//! after it: the versions and checksums are the same. On SQLite and PostgreSQL.

use std::path::{Path, PathBuf};

use sqlx::migrate::Migrator;
use storage::testing::TestDb;
use storage::Store;

/// Every migration in one directory, as before the split, for one migrator.
struct Unsplit(PathBuf);

impl Unsplit {
    async fn migrator(tag: &str) -> (Self, Migrator) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = std::env::temp_dir().join(format!(
            "aethex-unsplit-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for from in [root.join("../storage/migrations"), root.join("migrations")] {
            for entry in std::fs::read_dir(from).unwrap() {
                let path = entry.unwrap().path();
                std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
            }
        }
        let migrator = Migrator::new(dir.as_path()).await.unwrap();
        (Self(dir), migrator)
    }
}

impl Drop for Unsplit {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `(version, checksum)` of every applied migration.
async fn applied(store: &Store) -> Vec<(i64, Vec<u8>)> {
    sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations ORDER BY version")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

fn listed(migrator: &Migrator) -> Vec<(i64, Vec<u8>)> {
    let mut all: Vec<_> = migrator
        .iter()
        .map(|m| (m.version, m.checksum.to_vec()))
        .collect();
    all.sort();
    all
}

async fn a_fresh_database_gets_the_versions_and_checksums_of_before_the_split(
    store: Store,
    db: &TestDb,
) {
    let (_dir, unsplit) = Unsplit::migrator(db.kind).await;
    let versions = |rows: Vec<(i64, Vec<u8>)>| rows.into_iter().map(|r| r.0).collect::<Vec<_>>();
    // Storage alone: its own, and it works (the channel CLI and signaling need no more).
    assert_eq!(versions(applied(&store).await), [1, 2, 3, 9]);
    store.create_channel("alone").await.unwrap();
    assert_eq!(store.owner_of("alone").await.unwrap(), None);
    platform::migrate(&store).await.unwrap();
    assert_eq!(applied(&store).await, listed(&unsplit));
    assert_eq!(
        versions(applied(&store).await),
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    );
    // A binary from before the split (one migrator, missing versions refused) accepts it.
    unsplit.run(store.pool()).await.unwrap();
    // Reopened: nothing to do, nothing changed.
    store.close().await;
    let reopened = db.open().await;
    platform::migrate(&reopened).await.unwrap();
    assert_eq!(applied(&reopened).await, listed(&unsplit));
}

async fn a_database_migrated_before_the_split_opens_unchanged(store: Store, db: &TestDb) {
    let (_dir, unsplit) = Unsplit::migrator(db.kind).await;
    // As a binary from before the split left it: every version applied by one migrator (which
    // finds storage's three, applied by `Store::open`, with its own checksums).
    unsplit.run(store.pool()).await.unwrap();
    let before = applied(&store).await;
    assert_eq!(before, listed(&unsplit));
    store.close().await;
    let reopened = db.open().await;
    platform::migrate(&reopened).await.unwrap();
    assert_eq!(applied(&reopened).await, before);
    // Platform tables are there and usable.
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM webhook_deliveries")
        .fetch_one(reopened.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
}

// The store as storage's `open` leaves it: each test runs the platform's migrations itself.
storage::on_both_databases!(
    a_fresh_database_gets_the_versions_and_checksums_of_before_the_split,
    a_database_migrated_before_the_split_opens_unchanged,
);
