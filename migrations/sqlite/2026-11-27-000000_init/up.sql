-- Users, conversations (direct and rooms share one table), their members,
-- and messages with a dense per-conversation seq. Times are milliseconds
-- since the Unix epoch, UTC.

CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    username      TEXT NOT NULL,
    -- lower-cased name: unique without regard to case
    username_key  TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_seen     BIGINT
);

CREATE TABLE conversations (
    id            TEXT PRIMARY KEY NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('direct', 'room')),
    name          TEXT,
    name_key      TEXT,
    visibility    TEXT CHECK (visibility IN ('public', 'private')),
    -- "<lower id>|<higher id>" for direct conversations: one per pair
    direct_key    TEXT UNIQUE,
    last_seq      BIGINT NOT NULL DEFAULT 0,
    -- kept with every join and leave so large rooms need no COUNT(*)
    member_count  BIGINT NOT NULL DEFAULT 0,
    created_by    TEXT NOT NULL REFERENCES users (id),
    created_at    BIGINT NOT NULL,
    last_activity BIGINT NOT NULL
);
CREATE INDEX conversations_rooms ON conversations (kind, name_key);

CREATE TABLE members (
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    user_id         TEXT NOT NULL REFERENCES users (id),
    last_read_seq   BIGINT NOT NULL DEFAULT 0,
    joined_at       BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX members_by_user ON members (user_id, conversation_id);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY NOT NULL,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    seq             BIGINT NOT NULL,
    sender_id       TEXT NOT NULL REFERENCES users (id),
    body            TEXT NOT NULL,
    client_msg_id   TEXT,
    created_at      BIGINT NOT NULL,
    edited_at       BIGINT,
    deleted         BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (conversation_id, seq)
);
CREATE UNIQUE INDEX messages_client_msg
    ON messages (conversation_id, sender_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
