-- Accounts, sessions, channel ownership and metadata, follows. Portable SQL (SQLite and
-- PostgreSQL): ids are application-generated text, times are Unix seconds (BIGINT), flags are
-- INTEGER 0/1.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

-- Only the SHA-256 of a session token is stored.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

ALTER TABLE channels ADD COLUMN owner_id TEXT REFERENCES users(id);
ALTER TABLE channels ADD COLUMN title TEXT NOT NULL DEFAULT '';
ALTER TABLE channels ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE channels ADD COLUMN category TEXT NOT NULL DEFAULT '';
CREATE INDEX channels_owner ON channels (owner_id);

CREATE TABLE follows (
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    channel    TEXT NOT NULL REFERENCES channels(name) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, channel)
);
CREATE INDEX follows_channel ON follows (channel, created_at);
