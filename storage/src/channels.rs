//! Channels and stream keys. The stream key itself is never stored: only its SHA-256.

use sha2::{Digest, Sha256};

use crate::{Store, StoreError};

/// A stream key as handed to the creator once. Never logged: `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamKey(String);

impl StreamKey {
    /// The secret text (show it once, to its owner).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKey(<redacted>)")
    }
}

/// Length of a stream key's random part in bytes (192 bits).
const KEY_BYTES: usize = 24;

/// The fingerprint a stream key is stored as (SHA-256, hex): what a live publisher's session
/// keeps, to notice when the key it used is replaced.
pub fn key_fingerprint(key: &str) -> String {
    hash_key(key)
}

pub(crate) fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Every stream key starts with this (it tells a key from an invite or a playback token).
pub const KEY_PREFIX: &str = "sk_";

fn new_key() -> Result<StreamKey, StoreError> {
    Ok(StreamKey(format!("{KEY_PREFIX}{}", random_hex(KEY_BYTES)?)))
}

/// `bytes` bytes from the OS CSPRNG, hex-encoded (keys, tokens, ids).
pub(crate) fn random_hex(bytes: usize) -> Result<String, StoreError> {
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(hex::encode(raw))
}

impl Store {
    /// Create a channel with a fresh stream key (no owner: managed by the operator's CLI).
    pub async fn create_channel(&self, name: &str) -> Result<StreamKey, StoreError> {
        self.create_channel_for(name, None).await
    }

    /// Create a channel owned by user `owner`, with a fresh stream key.
    pub async fn create_channel_for(
        &self,
        name: &str,
        owner: Option<&str>,
    ) -> Result<StreamKey, StoreError> {
        let key = new_key()?;
        let result = sqlx::query(
            "INSERT INTO channels (name, stream_key_hash, created_at, owner_id) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(name)
        .bind(hash_key(key.expose()))
        .bind(crate::unix_now())
        .bind(owner)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(key),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Exists(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Replace a channel's stream key; returns the new key, or `None` if there is no such channel.
    pub async fn rotate_key(&self, name: &str) -> Result<Option<StreamKey>, StoreError> {
        let key = new_key()?;
        let done = sqlx::query("UPDATE channels SET stream_key_hash = $1 WHERE name = $2")
            .bind(hash_key(key.expose()))
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok((done.rows_affected() == 1).then_some(key))
    }

    /// Whether channel `name`'s stream key is still the one with `fingerprint` (false once it
    /// was rotated, by the API or by `aethex channel rotate-key` on the same database).
    pub async fn key_matches(&self, name: &str, fingerprint: &str) -> Result<bool, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT name FROM channels WHERE name = $1 AND stream_key_hash = $2")
                .bind(name)
                .bind(fingerprint)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.is_some())
    }

    /// The channel a stream key belongs to.
    pub async fn channel_for_key(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT name FROM channels WHERE stream_key_hash = $1")
                .bind(hash_key(key))
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|r| r.0))
    }

    /// The id of the user who owns channel `name` (`None`: no such channel, or made by the
    /// operator).
    pub async fn owner_of(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT owner_id FROM channels WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.and_then(|r| r.0))
    }

    /// Whether a channel exists.
    pub async fn channel_exists(&self, name: &str) -> Result<bool, StoreError> {
        let row: Option<(String,)> = sqlx::query_as("SELECT name FROM channels WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }

    /// Mark a channel private (viewers need a playback token) or public. `false`: no such
    /// channel.
    pub async fn set_private(&self, name: &str, private: bool) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE channels SET private = $1 WHERE name = $2")
            .bind(i64::from(private))
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether a channel is private; `None` when there is no such channel.
    pub async fn is_private(&self, name: &str) -> Result<Option<bool>, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT private FROM channels WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|(p,)| p != 0))
    }

    /// Number of channels.
    pub async fn channel_count(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM channels")
            .fetch_one(self.pool())
            .await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    async fn key_finds_its_channel_and_is_stored_hashed(store: Store, _db: &TestDb) {
        let key = store.create_channel("alice").await.unwrap();
        assert!(key.expose().len() >= 3 + 32, "at least 128 bits of hex");
        assert_eq!(
            store
                .channel_for_key(key.expose())
                .await
                .unwrap()
                .as_deref(),
            Some("alice")
        );
        assert_eq!(store.channel_for_key("sk_wrong").await.unwrap(), None);
        let (stored,): (String,) = sqlx::query_as("SELECT stream_key_hash FROM channels")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_ne!(stored, key.expose());
        assert_eq!(stored, hash_key(key.expose()));
        assert!(!format!("{key:?}").contains(key.expose()));
    }

    async fn duplicate_channel_is_refused_and_keys_survive_reopen(store: Store, db: &TestDb) {
        let key = store.create_channel("bob").await.unwrap();
        assert!(matches!(
            store.create_channel("bob").await,
            Err(StoreError::Exists(_))
        ));
        store.close().await;
        let reopened = db.open().await;
        assert_eq!(
            reopened
                .channel_for_key(key.expose())
                .await
                .unwrap()
                .as_deref(),
            Some("bob")
        );
        let rotated = reopened.rotate_key("bob").await.unwrap().unwrap();
        assert_eq!(reopened.channel_for_key(key.expose()).await.unwrap(), None);
        assert_eq!(
            reopened
                .channel_for_key(rotated.expose())
                .await
                .unwrap()
                .as_deref(),
            Some("bob")
        );
        assert_eq!(reopened.channel_count().await.unwrap(), 1);
    }

    async fn a_channel_is_public_until_marked_private_and_that_survives_reopen(
        store: Store,
        db: &TestDb,
    ) {
        store.create_channel("carol").await.unwrap();
        assert_eq!(store.is_private("carol").await.unwrap(), Some(false));
        assert!(store.set_private("carol", true).await.unwrap());
        assert!(!store.set_private("nobody", true).await.unwrap());
        assert_eq!(store.is_private("nobody").await.unwrap(), None);
        store.close().await;
        let reopened = db.open().await;
        assert_eq!(reopened.is_private("carol").await.unwrap(), Some(true));
        assert!(reopened.channel_exists("carol").await.unwrap());
    }

    async fn a_key_fingerprint_matches_until_the_key_is_rotated(store: Store, _db: &TestDb) {
        let key = store.create_channel("dave").await.unwrap();
        let fp = key_fingerprint(key.expose());
        assert!(store.key_matches("dave", &fp).await.unwrap());
        assert!(!store.key_matches("nobody", &fp).await.unwrap());
        let rotated = store.rotate_key("dave").await.unwrap().unwrap();
        assert!(!store.key_matches("dave", &fp).await.unwrap());
        let new_fp = key_fingerprint(rotated.expose());
        assert!(store.key_matches("dave", &new_fp).await.unwrap());
    }

    crate::on_both_databases!(
        a_key_fingerprint_matches_until_the_key_is_rotated,
        key_finds_its_channel_and_is_stored_hashed,
        duplicate_channel_is_refused_and_keys_survive_reopen,
        a_channel_is_public_until_marked_private_and_that_survives_reopen,
    );
}
