//! AeThex LIVE cluster state, shared by every node of a cluster:
//!
//! - [`registry`]: which edges exist (region, URL, load) and which node has which live channel,
//!   with TTLs, embedded in a node or in Redis (`cluster.redis_url`);
//! - [`region`]: `CIDR = region` rules that place a viewer by address;
//! - [`token`]: signed, expiring playback tokens (HS256 JWT) for private channels, verified
//!   offline by any node that holds the cluster secret.
#![warn(missing_docs)]

pub mod region;
pub mod registry;
mod registry_redis;
pub mod token;

pub use region::{Cidr, RegionRule, RegionRules};
pub use registry::{EdgeRecord, LiveRecord, Registry, RegistryError};
pub use registry_redis::RedisRegistry;
pub use token::{Claims, TokenError, TokenKey};
