//! Playback tokens for private channels: a JWT (RFC 7519) signed with HMAC-SHA256 (`HS256`)
//! under the cluster secret, with the channel and an expiry as claims. Any node holding the
//! secret verifies one offline, with no database call; stream keys never take part.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The only header this module writes and accepts: anything else (`alg: none`, RS256 with the
/// secret as a public key, ...) is refused.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Why a token was refused. The message is safe to show to the viewer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("malformed playback token")]
    Malformed,
    /// A header other than `{"alg":"HS256"}`.
    #[error("playback token must be signed with HS256")]
    Algorithm,
    /// The signature does not verify under the cluster secret.
    #[error("playback token signature is invalid")]
    Signature,
    /// `exp` is in the past.
    #[error("playback token expired")]
    Expired,
    /// Signed for another channel.
    #[error("playback token is for another channel")]
    WrongChannel,
}

/// The claims of a playback token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The channel it opens.
    pub channel: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// The signing key (the cluster secret). `Debug` never shows it.
#[derive(Clone)]
pub struct TokenKey(std::sync::Arc<[u8]>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

impl TokenKey {
    /// A key from the secret's bytes.
    pub fn new(secret: &[u8]) -> Self {
        Self(std::sync::Arc::from(secret))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length.
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length")
    }

    /// A token for `channel`, valid until `exp` (Unix seconds).
    pub fn sign(&self, channel: &str, exp: u64) -> String {
        let claims = Claims {
            channel: channel.to_string(),
            exp,
        };
        let body = serde_json::to_vec(&claims).unwrap_or_default();
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(body)
        );
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    /// Check `token` for `channel` at time `now` (Unix seconds). The signature is checked (in
    /// constant time) before the claims are read.
    pub fn verify(&self, token: &str, channel: &str, now: u64) -> Result<Claims, TokenError> {
        let mut parts = token.trim().split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header = URL_SAFE_NO_PAD
            .decode(h)
            .map_err(|_| TokenError::Malformed)?;
        let header: Header = serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
        if header.alg != "HS256" {
            return Err(TokenError::Algorithm);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(c.as_bytes());
        mac.verify_slice(&sig).map_err(|_| TokenError::Signature)?;
        let claims = URL_SAFE_NO_PAD
            .decode(c)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&claims).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        if claims.channel != channel {
            return Err(TokenError::WrongChannel);
        }
        Ok(claims)
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000;

    fn key() -> TokenKey {
        TokenKey::new(b"cluster-secret-0123456789")
    }

    #[test]
    fn a_token_opens_its_channel_until_it_expires() {
        let t = key().sign("show", NOW + 60);
        let claims = key().verify(&t, "show", NOW).unwrap();
        assert_eq!(claims.exp, NOW + 60);
        assert_eq!(key().verify(&t, "show", NOW + 60), Err(TokenError::Expired));
        assert_eq!(
            key().verify(&t, "other", NOW),
            Err(TokenError::WrongChannel)
        );
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let t = TokenKey::new(b"another-secret-000000000").sign("show", NOW + 60);
        assert_eq!(key().verify(&t, "show", NOW), Err(TokenError::Signature));
    }

    #[test]
    fn changed_claims_break_the_signature() {
        let t = key().sign("show", NOW + 60);
        let parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"channel":"show","exp":9999999999}"#);
        let t = format!("{}.{forged}.{}", parts[0], parts[2]);
        assert_eq!(key().verify(&t, "show", NOW), Err(TokenError::Signature));
    }

    #[test]
    fn alg_none_is_refused() {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let c = URL_SAFE_NO_PAD.encode(br#"{"channel":"show","exp":9999999999}"#);
        assert_eq!(
            key().verify(&format!("{h}.{c}."), "show", NOW),
            Err(TokenError::Algorithm)
        );
    }

    #[test]
    fn the_format_is_a_standard_hs256_jwt() {
        // Decodable by any JWT library: header and claims are plain base64url JSON.
        let t = key().sign("show", NOW + 1);
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "HS256");
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["channel"], "show");
        assert_eq!(claims["exp"], NOW + 1);
    }

    proptest! {
        #[test]
        fn arbitrary_text_is_refused_without_panicking(s in ".{0,300}") {
            prop_assert!(key().verify(&s, "show", NOW).is_err());
        }
    }
}
