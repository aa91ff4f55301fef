-- Channels and their stream keys. Portable SQL: runs on SQLite and PostgreSQL alike.
-- The stream key itself is never stored: only its SHA-256, hex-encoded.
CREATE TABLE channels (
    name            TEXT PRIMARY KEY,
    stream_key_hash TEXT NOT NULL UNIQUE,
    created_at      BIGINT NOT NULL
);
