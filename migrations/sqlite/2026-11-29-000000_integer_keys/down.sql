DROP TRIGGER messages_changed;
DROP VIEW messages;

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
INSERT INTO messages
    (id, conversation_id, seq, sender_id, body, client_msg_id, created_at, edited_at, deleted)
SELECT m.id, c.id, m.seq, u.id, m.body, m.client_msg_id, m.created_at, m.edited_at, m.deleted
FROM message_rows m
JOIN conversation_keys c ON c.key = m.conversation
JOIN user_keys u ON u.key = m.sender
ORDER BY m.rowid;

DROP TABLE message_rows;
DROP TRIGGER conversation_keys_made;
DROP TABLE conversation_keys;
DROP TRIGGER user_keys_made;
DROP TABLE user_keys;
