-- Stream records, donations, webhooks and their durable delivery outbox. Portable SQL (SQLite
-- and PostgreSQL). Deliveries are written in the same transaction as the event they announce,
-- so an accepted event is delivered even if the node dies right after (at least once).
CREATE TABLE streams (
    id         TEXT PRIMARY KEY,
    channel    TEXT NOT NULL REFERENCES channels(name) ON DELETE CASCADE,
    started_at BIGINT NOT NULL,
    ended_at   BIGINT
);
CREATE INDEX streams_channel ON streams (channel, started_at);

CREATE TABLE donations (
    id           TEXT PRIMARY KEY,
    channel      TEXT NOT NULL REFERENCES channels(name) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    amount_cents BIGINT NOT NULL,
    currency     TEXT NOT NULL,
    message      TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL
);

-- events: the subscribed event names, one per line; format: json or discord.
CREATE TABLE webhooks (
    id         TEXT PRIMARY KEY,
    channel    TEXT NOT NULL REFERENCES channels(name) ON DELETE CASCADE,
    url        TEXT NOT NULL,
    events     TEXT NOT NULL,
    secret     TEXT NOT NULL,
    format     TEXT NOT NULL DEFAULT 'json',
    created_at BIGINT NOT NULL
);
CREATE INDEX webhooks_channel ON webhooks (channel);

-- Times in milliseconds since the Unix epoch.
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    webhook_id      TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    delivered_at_ms BIGINT,
    last_status     BIGINT,
    last_error      TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (delivered_at_ms, next_attempt_ms);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, created_at_ms);
