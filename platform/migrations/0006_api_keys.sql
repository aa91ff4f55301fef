-- Public API keys with tiers, and their daily request counters (so quotas hold across nodes and
-- restarts). Only the SHA-256 of a key is stored. Portable SQL (SQLite and PostgreSQL).
CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key_hash   TEXT NOT NULL UNIQUE,
    tier       TEXT NOT NULL DEFAULT 'free',
    created_at BIGINT NOT NULL
);
CREATE INDEX api_keys_user ON api_keys (user_id);

-- day: days since the Unix epoch (UTC).
CREATE TABLE api_usage (
    key_id   TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    day      BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    PRIMARY KEY (key_id, day)
);
