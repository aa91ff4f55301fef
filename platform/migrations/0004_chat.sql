-- Chat: persisted messages, bans and timeouts, moderators, and per-channel chat settings.
-- Portable SQL (SQLite and PostgreSQL). Times in milliseconds since the Unix epoch.
CREATE TABLE chat_messages (
    id         TEXT PRIMARY KEY,
    channel    TEXT NOT NULL REFERENCES channels(name) ON DELETE CASCADE,
    user_id    TEXT NOT NULL,
    user_name  TEXT NOT NULL,
    body       TEXT NOT NULL,
    sent_at_ms BIGINT NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX chat_messages_channel ON chat_messages (channel, sent_at_ms);

-- until_ms NULL: banned; otherwise timed out until then.
CREATE TABLE chat_bans (
    channel  TEXT NOT NULL REFERENCES channels(name) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    until_ms BIGINT,
    by_user  TEXT NOT NULL,
    PRIMARY KEY (channel, user_id)
);

CREATE TABLE channel_moderators (
    channel TEXT NOT NULL REFERENCES channels(name) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (channel, user_id)
);

ALTER TABLE channels ADD COLUMN slow_mode_secs INTEGER NOT NULL DEFAULT 0;
-- Blocked terms, one per line, matched case-insensitively as substrings.
ALTER TABLE channels ADD COLUMN blocked_terms TEXT NOT NULL DEFAULT '';
