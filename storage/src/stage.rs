//! Stage invites: a channel's owner invites a guest onto its co-streaming stage. The guest
//! publishes (WHIP) and watches the others (WHEP) with the invite token as its bearer. Only
//! the token's SHA-256 is stored; an invite expires, and may be revoked before.

use crate::channels::{hash_key, random_hex};
use crate::{Store, StoreError};

/// An invite token as handed to the owner once (`si_` + 192 random bits). `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteToken(String);

impl InviteToken {
    /// The secret text (show it once).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for InviteToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InviteToken(<redacted>)")
    }
}

/// The shortest and longest lifetime of an invite, in seconds (1 minute, 7 days).
pub const INVITE_TTL: std::ops::RangeInclusive<i64> = 60..=7 * 24 * 3600;

/// The longest guest name, in characters.
pub const MAX_GUEST_NAME: usize = 64;

/// Guests a stage holds beside its host (the `stage` crate's `MAX_PARTICIPANTS` less the
/// host; here so signaling and the platform share it without building Opus).
pub const MAX_GUESTS: usize = 5;

/// Check an invite's guest name (trimmed: 1 to [`MAX_GUEST_NAME`] characters, no control
/// characters) and lifetime (within [`INVITE_TTL`]); the error says what is allowed.
pub fn check_invite(name: &str, ttl_s: i64) -> Result<(), String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_GUEST_NAME || name.contains(char::is_control) {
        return Err(format!(
            "name: 1-{MAX_GUEST_NAME} characters, no control characters"
        ));
    }
    if !INVITE_TTL.contains(&ttl_s) {
        return Err(format!(
            "ttl_s: {} to {} seconds",
            INVITE_TTL.start(),
            INVITE_TTL.end()
        ));
    }
    Ok(())
}

/// An invite as stored (never its token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// Its id (for listing and revoking).
    pub id: String,
    /// The channel whose stage it opens.
    pub channel: String,
    /// The guest's display name.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds: the token no longer admits after this.
    pub expires_at: i64,
    /// Unix seconds, when revoked.
    pub revoked_at: Option<i64>,
}

impl Invite {
    /// It admits its guest at `now` (Unix seconds).
    pub fn admits(&self, now: i64) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// A new invite: the stored record and its token (shown once).
#[derive(Debug, Clone)]
pub struct NewInvite {
    /// The record.
    pub invite: Invite,
    /// The token.
    pub token: InviteToken,
}

type Row = (String, String, String, i64, i64, Option<i64>);

fn from_row((id, channel, name, created_at, expires_at, revoked_at): Row) -> Invite {
    Invite {
        id,
        channel,
        name,
        created_at,
        expires_at,
        revoked_at,
    }
}

const COLUMNS: &str = "id, channel, name, created_at, expires_at, revoked_at";

impl Store {
    /// Invite `name` onto `channel`'s stage for `ttl_s` seconds (clamped to [`INVITE_TTL`]).
    /// `None`: there is no such channel.
    pub async fn create_invite(
        &self,
        channel: &str,
        name: &str,
        ttl_s: i64,
    ) -> Result<Option<NewInvite>, StoreError> {
        if !self.channel_exists(channel).await? {
            return Ok(None);
        }
        let token = InviteToken(format!("si_{}", random_hex(24)?));
        let now = crate::unix_now();
        let invite = Invite {
            id: random_hex(8)?,
            channel: channel.to_string(),
            name: name.to_string(),
            created_at: now,
            expires_at: now + ttl_s.clamp(*INVITE_TTL.start(), *INVITE_TTL.end()),
            revoked_at: None,
        };
        let result = sqlx::query(
            "INSERT INTO stage_invites \
             (id, channel, name, token_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&invite.id)
        .bind(&invite.channel)
        .bind(&invite.name)
        .bind(hash_key(token.expose()))
        .bind(invite.created_at)
        .bind(invite.expires_at)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(Some(NewInvite { invite, token })),
            // The channel was deleted in between.
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The invite a token belongs to, if it admits its guest now (not expired, not revoked).
    pub async fn invite_for_token(&self, token: &str) -> Result<Option<Invite>, StoreError> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM stage_invites WHERE token_hash = $1"
        ))
        .bind(hash_key(token))
        .fetch_optional(&self.pool)
        .await?;
        let now = crate::unix_now();
        Ok(row.map(from_row).filter(|i| i.admits(now)))
    }

    /// A channel's invites, newest first (expired and revoked ones included).
    pub async fn invites(&self, channel: &str) -> Result<Vec<Invite>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM stage_invites WHERE channel = $1 \
             ORDER BY created_at DESC, id"
        ))
        .bind(channel)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(from_row).collect())
    }

    /// Revoke invite `id` of `channel`: its token admits no one from now on. Returns whether
    /// there was such an invite (revoking twice keeps the first time).
    pub async fn revoke_invite(&self, channel: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE stage_invites SET revoked_at = COALESCE(revoked_at, $1) \
             WHERE channel = $2 AND id = $3",
        )
        .bind(crate::unix_now())
        .bind(channel)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::TestDb;
    use crate::Store;

    async fn an_invite_admits_its_guest_until_revoked_and_survives_a_restart(
        store: Store,
        db: &TestDb,
    ) {
        store.create_channel("host").await.unwrap();
        let new = store
            .create_invite("host", "Guest One", 3600)
            .await
            .unwrap()
            .expect("the channel exists");
        let token = new.token.expose().to_string();
        assert!(token.starts_with("si_") && token.len() == 3 + 48);
        assert_eq!(format!("{:?}", new.token), "InviteToken(<redacted>)");
        let found = store.invite_for_token(&token).await.unwrap().unwrap();
        assert_eq!(found, new.invite);
        assert_eq!(found.expires_at - found.created_at, 3600);
        // Stored hashed: the token itself is nowhere in the table.
        let (hash,): (String,) = sqlx::query_as("SELECT token_hash FROM stage_invites")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_ne!(hash, token);

        store.close().await;
        let store = db.open().await;
        assert!(store.invite_for_token(&token).await.unwrap().is_some());
        assert!(store.revoke_invite("host", &new.invite.id).await.unwrap());
        assert_eq!(store.invite_for_token(&token).await.unwrap(), None);
        let listed = store.invites("host").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].revoked_at.is_some());
        // Another channel's id, or an unknown one, revokes nothing.
        assert!(!store.revoke_invite("other", &new.invite.id).await.unwrap());
        assert!(!store.revoke_invite("host", "nope").await.unwrap());
    }

    async fn invites_need_a_channel_and_their_lifetime_is_bounded(store: Store, _db: &TestDb) {
        assert!(store
            .create_invite("none", "x", 60)
            .await
            .unwrap()
            .is_none());
        store.create_channel("host").await.unwrap();
        let short = store.create_invite("host", "a", 1).await.unwrap().unwrap();
        assert_eq!(short.invite.expires_at - short.invite.created_at, 60);
        let long = store
            .create_invite("host", "b", i64::MAX)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            long.invite.expires_at - long.invite.created_at,
            7 * 24 * 3600
        );
        // An expired invite admits no one (its expiry set in the past).
        sqlx::query("UPDATE stage_invites SET expires_at = 0 WHERE id = $1")
            .bind(&short.invite.id)
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(
            store.invite_for_token(short.token.expose()).await.unwrap(),
            None
        );
        assert!(store
            .invite_for_token(long.token.expose())
            .await
            .unwrap()
            .is_some());
        assert!(store
            .invite_for_token("si_unknown")
            .await
            .unwrap()
            .is_none());
    }

    async fn deleting_a_channel_deletes_its_invites(store: Store, _db: &TestDb) {
        store.create_channel("host").await.unwrap();
        let new = store
            .create_invite("host", "a", 600)
            .await
            .unwrap()
            .unwrap();
        sqlx::query("DELETE FROM channels WHERE name = 'host'")
            .execute(store.pool())
            .await
            .unwrap();
        assert!(store.invites("host").await.unwrap().is_empty());
        assert_eq!(
            store.invite_for_token(new.token.expose()).await.unwrap(),
            None
        );
    }

    #[test]
    fn invite_names_and_lifetimes_are_checked() {
        use super::check_invite;
        assert_eq!(check_invite(" Ana ", 60), Ok(()));
        assert!(check_invite("", 600).unwrap_err().starts_with("name:"));
        assert!(check_invite("a\nb", 600).is_err());
        assert!(check_invite(&"x".repeat(65), 600).is_err());
        assert!(check_invite("ok", 59).unwrap_err().starts_with("ttl_s:"));
        assert!(check_invite("ok", 7 * 24 * 3600 + 1).is_err());
    }

    crate::on_both_databases!(
        an_invite_admits_its_guest_until_revoked_and_survives_a_restart,
        invites_need_a_channel_and_their_lifetime_is_bounded,
        deleting_a_channel_deletes_its_invites,
    );
}
