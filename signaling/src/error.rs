//! API errors. The type, its status codes and its JSON body live in `http-common` (the
//! platform API answers the same shape without depending on the media side); here is what an
//! SFU failure answers.

use sfu::SfuError;

pub use http_common::ApiError;

/// The answer to an SFU failure: client mistakes (a bad offer, an unknown session) are 4xx, a
/// full or stopping engine 503; anything else is a bug (500, cause logged). A function rather
/// than `From`: neither type is this crate's.
pub fn from_sfu(e: SfuError) -> ApiError {
    match e {
        SfuError::BadOffer(m) => ApiError::BadSdp(format!("bad SDP offer: {m}")),
        SfuError::Unusable(m) => ApiError::BadSdp(m),
        SfuError::CodecMismatch(m) => ApiError::CodecMismatch(m),
        SfuError::Offline(s) => ApiError::Offline(s.to_string()),
        SfuError::UnknownPeer => ApiError::NotFound("no such session".into()),
        SfuError::Full(_) => ApiError::Full,
        SfuError::Unavailable => ApiError::Unavailable,
        other => ApiError::Internal(other.to_string()),
    }
}
