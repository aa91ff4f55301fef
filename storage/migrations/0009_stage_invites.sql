-- Co-streaming stage invites: a guest joins a channel's stage (publishes into it and watches
-- the others) with its invite token. Only the token's SHA-256 is stored. Times are Unix
-- seconds; a revoked invite keeps its row (revoked_at) so the owner's list shows it.
CREATE TABLE stage_invites (
    id         TEXT PRIMARY KEY,
    channel    TEXT NOT NULL REFERENCES channels(name) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE INDEX stage_invites_by_channel ON stage_invites (channel, created_at);
