-- The moderation queue (docs/moderation.md). Per channel: what a message the model scores at
-- or above the threshold gets: 'off' (nothing), 'flag' (broadcast, marked for moderators) or
-- 'hold' (kept from everyone but its author and the moderators until one decides).
ALTER TABLE channels ADD COLUMN toxicity_action TEXT NOT NULL DEFAULT 'flag';
ALTER TABLE channels ADD COLUMN toxicity_threshold DOUBLE PRECISION NOT NULL DEFAULT 0.8;

-- status: 'visible', 'held' (waiting for a moderator) or 'rejected' (a moderator refused it).
ALTER TABLE chat_messages ADD COLUMN status TEXT NOT NULL DEFAULT 'visible';
-- Scored at or above the threshold under 'flag': moderators see it marked.
ALTER TABLE chat_messages ADD COLUMN flagged INTEGER NOT NULL DEFAULT 0;
CREATE INDEX chat_messages_status ON chat_messages (channel, status);

-- A viewer's report of a message; open until a moderator decides on the message.
CREATE TABLE chat_reports (
    message_id     TEXT NOT NULL REFERENCES chat_messages(id) ON DELETE CASCADE,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    reason         TEXT NOT NULL,
    reported_at_ms BIGINT NOT NULL,
    open           INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (message_id, user_id)
);
CREATE INDEX chat_reports_open ON chat_reports (message_id, open);

-- Every decision on a queued message, with what the model said then: the next model's
-- training data. decision: 'approved' or 'rejected'; source: 'held' or 'reported'.
CREATE TABLE moderation_decisions (
    message_id     TEXT NOT NULL REFERENCES chat_messages(id) ON DELETE CASCADE,
    channel        TEXT NOT NULL REFERENCES channels(name) ON DELETE CASCADE,
    decision       TEXT NOT NULL,
    source         TEXT NOT NULL,
    reports        INTEGER NOT NULL,
    toxicity       TEXT NOT NULL,
    toxicity_score DOUBLE PRECISION NOT NULL,
    by_user        TEXT NOT NULL,
    decided_at_ms  BIGINT NOT NULL
);
CREATE INDEX moderation_decisions_channel ON moderation_decisions (channel, decided_at_ms);
