-- Every chat message's scores (moderation crate, docs/moderation.md), set before it is
-- broadcast: the toxicity label (hate, offensive, neither) with the probability that it is
-- hate or offensive, and the sentiment label with its polarity (-1 to 1). Messages stored
-- before scoring existed read as neither / neutral.
ALTER TABLE chat_messages ADD COLUMN toxicity TEXT NOT NULL DEFAULT 'neither';
ALTER TABLE chat_messages ADD COLUMN toxicity_score DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE chat_messages ADD COLUMN sentiment TEXT NOT NULL DEFAULT 'neutral';
ALTER TABLE chat_messages ADD COLUMN sentiment_score DOUBLE PRECISION NOT NULL DEFAULT 0;
