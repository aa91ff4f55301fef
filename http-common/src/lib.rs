//! AeThex LIVE HTTP pieces that the media node's HTTP surface (`signaling`) and the platform
//! API (`platform`) share, so that neither depends on the other and the platform builds with
//! no media engine:
//!
//! - [`ApiError`]: every error a handler answers, mapped once to a status and a JSON body
//!   `{"code", "error"}` (with `Retry-After` where a retry may succeed);
//! - request extractors and parsers: [`ClientIp`], [`bearer_token`];
//! - per-address limit helpers: [`TokenBuckets`], [`client_key`], [`loopback`], the resolved
//!   [`ClientAddr`] of a request, and the [`Refusals`] counter a refusal is counted in.
//!
//! Nothing here knows the SFU, the database or the cluster registry (only `cluster::Cidr`).
#![warn(missing_docs)]

pub mod error;
pub mod extract;
pub mod limits;

pub use error::ApiError;
pub use extract::{bearer_token, ClientIp};
pub use limits::{client_key, loopback, ClientAddr, Refusals, TokenBuckets};
