-- The same tables as migrations/sqlite, so that one diesel schema
-- (src/adapters/store/schema.rs) serves both backends, with two
-- differences: keys and ids sort bytewise (COLLATE "C") whatever the
-- database's locale, as they do in SQLite, so that prefix ranges and
-- orderings agree; and members carry join_order, which SQLite gets from
-- its rowid. Times are milliseconds since the Unix epoch, UTC.

CREATE TABLE users (
    id            TEXT COLLATE "C" PRIMARY KEY,
    username      TEXT NOT NULL,
    -- lower-cased name: unique without regard to case
    username_key  TEXT COLLATE "C" NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_seen     BIGINT
);

CREATE TABLE conversations (
    id            TEXT COLLATE "C" PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('direct', 'room')),
    name          TEXT,
    name_key      TEXT COLLATE "C",
    visibility    TEXT CHECK (visibility IN ('public', 'private')),
    -- "<lower id>|<higher id>" for direct conversations: one per pair
    direct_key    TEXT COLLATE "C" UNIQUE,
    -- the newest seq; its row lock orders the appends to the conversation
    last_seq      BIGINT NOT NULL DEFAULT 0,
    -- kept with every join and leave so large rooms need no COUNT(*)
    member_count  BIGINT NOT NULL DEFAULT 0,
    created_by    TEXT COLLATE "C" NOT NULL REFERENCES users (id),
    created_at    BIGINT NOT NULL,
    last_activity BIGINT NOT NULL
);
CREATE INDEX conversations_rooms ON conversations (kind, name_key);

CREATE TABLE members (
    conversation_id TEXT COLLATE "C" NOT NULL REFERENCES conversations (id),
    user_id         TEXT COLLATE "C" NOT NULL REFERENCES users (id),
    last_read_seq   BIGINT NOT NULL DEFAULT 0,
    joined_at       BIGINT NOT NULL,
    -- grows with every insert: join order, even within one millisecond
    join_order      BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX members_by_user ON members (user_id, conversation_id);
CREATE INDEX members_in_join_order ON members (conversation_id, join_order);

CREATE TABLE messages (
    id              TEXT COLLATE "C" PRIMARY KEY,
    conversation_id TEXT COLLATE "C" NOT NULL REFERENCES conversations (id),
    seq             BIGINT NOT NULL,
    sender_id       TEXT COLLATE "C" NOT NULL REFERENCES users (id),
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
