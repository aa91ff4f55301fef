-- Analytics: one row per WHEP viewer session, and a viewer-count sample per live channel.
-- Portable SQL (SQLite and PostgreSQL). Times in seconds since the Unix epoch. No foreign key
-- to channels: an edge records its viewers' sessions though it has no channel rows of its own.
CREATE TABLE viewer_sessions (
    id         TEXT PRIMARY KEY,
    channel    TEXT NOT NULL,
    -- The stream record open when the viewer connected (NULL where there is none, at an edge
    -- with a database of its own).
    stream_id  TEXT,
    -- HMAC of the client address and user agent under the cluster's secret: counts unique
    -- viewers without keeping their addresses.
    viewer     TEXT NOT NULL,
    node_id    TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    -- Refreshed by the node every sample period while the session is open, so a session left
    -- open by a crash ends where its node last saw it.
    last_seen  BIGINT NOT NULL,
    ended_at   BIGINT
);
CREATE INDEX viewer_sessions_channel ON viewer_sessions (channel, started_at);
CREATE INDEX viewer_sessions_open ON viewer_sessions (node_id, ended_at);

-- Viewers of a live channel summed over every node, written by the node with its publisher.
CREATE TABLE viewer_samples (
    channel TEXT NOT NULL,
    t       BIGINT NOT NULL,
    viewers BIGINT NOT NULL,
    PRIMARY KEY (channel, t)
);
