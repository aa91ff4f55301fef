-- When a `follow` webhook event was last raised for a (user, channel) pair: a follow, unfollow,
-- follow cycle raises it again only after a quiet period (no event spam by toggling).
CREATE TABLE follow_events (
    user_id   TEXT NOT NULL,
    channel   TEXT NOT NULL,
    raised_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, channel)
);

-- Which worker (node id) claimed a webhook delivery: a restarted node sends at once what it
-- had claimed when it died, instead of waiting for the claim to expire.
ALTER TABLE webhook_deliveries ADD COLUMN claimed_by TEXT;
