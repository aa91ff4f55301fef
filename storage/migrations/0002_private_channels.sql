-- Private channels: viewers need a signed playback token (docs/architecture.md, "Playback
-- tokens"). 0 = public, 1 = private. Portable SQL (SQLite and PostgreSQL).
ALTER TABLE channels ADD COLUMN private INTEGER NOT NULL DEFAULT 0;
