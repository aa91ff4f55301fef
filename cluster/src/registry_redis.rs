//! The Redis backend of the registry.
//!
//! Keys, under a configurable prefix `P` (default `aethex`):
//! - `P:edge:{node_id}`: an [`EdgeRecord`] as JSON, with the TTL (`PX`);
//! - `P:edges`: the set of edge node ids (an index; members whose record expired are removed
//!   when the set is read);
//! - `P:live:{channel}`: a [`LiveRecord`] as JSON, with the TTL;
//! - `P:lives`: the set of channel names (index, cleaned the same way).

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use crate::registry::{EdgeRecord, LiveRecord, RegistryError};

/// Deletes `KEYS[1]` (and its name `ARGV[2]` from the index `KEYS[2]`) only if its JSON value's
/// field `ARGV[3]` is `ARGV[1]`: a publisher or an edge that moved to another node must not be
/// unregistered by the node it left.
const REMOVE_IF_OWNER: &str = r#"
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v)[ARGV[3]] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[2])
  return 1
end
return 0
"#;

const CONNECT_WITHIN: Duration = Duration::from_secs(3);

/// A registry in Redis. Reconnects on its own after Redis restarts.
#[derive(Clone)]
pub struct RedisRegistry {
    conn: ConnectionManager,
    prefix: String,
}

/// `url` without its password, for errors and logs.
pub(crate) fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***@{}", &url[at + 1..]),
        _ => url.to_string(),
    }
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn decode<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, RegistryError> {
    serde_json::from_str(raw).map_err(|e| RegistryError::Malformed(e.to_string()))
}

fn encode<T: serde::Serialize>(value: &T) -> String {
    // Records are plain strings and integers: serializing cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

impl RedisRegistry {
    pub(crate) async fn connect(url: &str, prefix: &str) -> Result<Self, RegistryError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(2);
        // Bounded: the manager would otherwise retry an unreachable server for minutes.
        let mut conn = tokio::time::timeout(
            CONNECT_WITHIN,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| RegistryError::Unreachable(redacted(url)))??;
        let _: () = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(Self {
            conn,
            prefix: prefix.to_string(),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.prefix)
    }

    fn index(&self, kind: &str) -> String {
        format!("{}:{kind}", self.prefix)
    }

    pub(crate) async fn put_edge(
        &self,
        edge: &EdgeRecord,
        ttl: Duration,
    ) -> Result<(), RegistryError> {
        self.put("edge", "edges", &edge.node_id, encode(edge), ttl)
            .await
    }

    /// `SET P:{kind}:{name} value PX ttl` and add `name` to the index, atomically.
    async fn put(
        &self,
        kind: &str,
        index: &str,
        name: &str,
        value: String,
        ttl: Duration,
    ) -> Result<(), RegistryError> {
        let mut c = self.conn.clone();
        let _: () = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.key(kind, name))
            .arg(value)
            .arg("PX")
            .arg(millis(ttl))
            .ignore()
            .sadd(self.index(index), name)
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    pub(crate) async fn remove_edge(&self, node_id: &str, via: &str) -> Result<(), RegistryError> {
        self.remove_if("edge", "edges", node_id, "via", via).await
    }

    async fn remove_if(
        &self,
        kind: &str,
        index: &str,
        name: &str,
        field: &str,
        value: &str,
    ) -> Result<(), RegistryError> {
        let mut c = self.conn.clone();
        let _: i64 = redis::Script::new(REMOVE_IF_OWNER)
            .key(self.key(kind, name))
            .key(self.index(index))
            .arg(value)
            .arg(name)
            .arg(field)
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// Values of the index's members that still exist; expired members leave the index.
    async fn members<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        index: &str,
    ) -> Result<Vec<T>, RegistryError> {
        let mut c = self.conn.clone();
        let names: Vec<String> = c.smembers(self.index(index)).await?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = names.iter().map(|n| self.key(kind, n)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (name, value) in names.into_iter().zip(values) {
            match value {
                Some(v) => out.push(decode(&v)?),
                None => gone.push(name),
            }
        }
        if !gone.is_empty() {
            let _: () = c.srem(self.index(index), gone).await?;
        }
        Ok(out)
    }

    pub(crate) async fn edges(&self) -> Result<Vec<EdgeRecord>, RegistryError> {
        self.members("edge", "edges").await
    }

    pub(crate) async fn put_live(
        &self,
        live: &LiveRecord,
        ttl: Duration,
    ) -> Result<(), RegistryError> {
        self.put("live", "lives", &live.channel, encode(live), ttl)
            .await
    }

    pub(crate) async fn remove_live(
        &self,
        channel: &str,
        node_id: &str,
    ) -> Result<(), RegistryError> {
        self.remove_if("live", "lives", channel, "node_id", node_id)
            .await
    }

    pub(crate) async fn live(&self, channel: &str) -> Result<Option<LiveRecord>, RegistryError> {
        let mut c = self.conn.clone();
        let value: Option<String> = c.get(self.key("live", channel)).await?;
        value.map(|v| decode(&v)).transpose()
    }

    pub(crate) async fn forget_node(&self, node_id: &str) -> Result<(), RegistryError> {
        for edge in self.edges().await? {
            if edge.via == node_id {
                self.remove_edge(&edge.node_id, node_id).await?;
            }
        }
        let lives: Vec<LiveRecord> = self.members("live", "lives").await?;
        for live in lives {
            if live.node_id == node_id {
                self.remove_live(&live.channel, node_id).await?;
            }
        }
        Ok(())
    }
}
