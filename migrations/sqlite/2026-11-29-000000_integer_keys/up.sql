-- Messages keyed inside the database by small integers for their
-- conversation and sender rather than by the 36-byte text ids: the two
-- conversation-keyed indexes are most of what each append writes (their
-- leaves are rewritten at every commit), and entries of 10-30 bytes
-- instead of 80-110 fill those leaves far more slowly. The text ids stay
-- the public ones; `messages` is now a view with the same columns as the
-- table it replaces, so every query reads it as before.

-- A key for every user and conversation, made with the row by a trigger.
-- Tables of their own, with INTEGER PRIMARY KEY: an implicit rowid may
-- change under VACUUM, and rebuilding users and conversations to add one
-- would mean turning off foreign keys.
CREATE TABLE user_keys (
    key INTEGER PRIMARY KEY,
    id  TEXT NOT NULL UNIQUE REFERENCES users (id)
);
INSERT INTO user_keys (id) SELECT id FROM users ORDER BY rowid;
CREATE TRIGGER user_keys_made AFTER INSERT ON users
BEGIN
    INSERT INTO user_keys (id) VALUES (NEW.id);
END;

CREATE TABLE conversation_keys (
    key INTEGER PRIMARY KEY,
    id  TEXT NOT NULL UNIQUE REFERENCES conversations (id)
);
INSERT INTO conversation_keys (id) SELECT id FROM conversations ORDER BY rowid;
CREATE TRIGGER conversation_keys_made AFTER INSERT ON conversations
BEGIN
    INSERT INTO conversation_keys (id) VALUES (NEW.id);
END;

CREATE TABLE message_rows (
    id              TEXT NOT NULL UNIQUE,
    conversation    INTEGER NOT NULL REFERENCES conversation_keys (key),
    seq             BIGINT NOT NULL,
    sender          INTEGER NOT NULL REFERENCES user_keys (key),
    body            TEXT NOT NULL,
    client_msg_id   TEXT,
    created_at      BIGINT NOT NULL,
    edited_at       BIGINT,
    deleted         BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (conversation, seq)
);
CREATE UNIQUE INDEX message_rows_client_msg
    ON message_rows (conversation, sender, client_msg_id)
    WHERE client_msg_id IS NOT NULL;

INSERT INTO message_rows
    (id, conversation, seq, sender, body, client_msg_id, created_at, edited_at, deleted)
SELECT m.id, c.key, m.seq, u.key, m.body, m.client_msg_id, m.created_at, m.edited_at, m.deleted
FROM messages m
JOIN conversation_keys c ON c.id = m.conversation_id
JOIN user_keys u ON u.id = m.sender_id
ORDER BY m.rowid;
DROP TABLE messages;

CREATE VIEW messages AS
SELECT m.id AS id, c.id AS conversation_id, m.seq AS seq, u.id AS sender_id,
       m.body AS body, m.client_msg_id AS client_msg_id, m.created_at AS created_at,
       m.edited_at AS edited_at, m.deleted AS deleted
FROM message_rows m
JOIN conversation_keys c ON c.key = m.conversation
JOIN user_keys u ON u.key = m.sender;

-- Edits and deletes go through the view; a message's id, place and
-- sender never change.
CREATE TRIGGER messages_changed INSTEAD OF UPDATE ON messages
BEGIN
    UPDATE message_rows
    SET body = NEW.body, edited_at = NEW.edited_at, deleted = NEW.deleted
    WHERE id = OLD.id;
END;
