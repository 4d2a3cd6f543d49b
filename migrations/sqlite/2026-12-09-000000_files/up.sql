-- Files carried by messages: their metadata as a JSON array on the
-- message (NULL when none), so that history reads no other table.
ALTER TABLE message_rows ADD COLUMN attachments TEXT;

DROP TRIGGER messages_changed;
DROP VIEW messages;
CREATE VIEW messages AS
SELECT m.id AS id, c.id AS conversation_id, m.seq AS seq, u.id AS sender_id,
       m.body AS body, m.client_msg_id AS client_msg_id, m.created_at AS created_at,
       m.edited_at AS edited_at, m.deleted AS deleted, m.attachments AS attachments
FROM message_rows m
JOIN conversation_keys c ON c.key = m.conversation
JOIN user_keys u ON u.key = m.sender;

-- Edits and deletes go through the view; a message's id, place and
-- sender never change.
CREATE TRIGGER messages_changed INSTEAD OF UPDATE ON messages
BEGIN
    UPDATE message_rows
    SET body = NEW.body, edited_at = NEW.edited_at, deleted = NEW.deleted,
        attachments = NEW.attachments
    WHERE id = OLD.id;
END;

-- Uploaded files (docs/files.md): one row an upload. The bytes are in the
-- blob store under their SHA-256, shared by every row with the same
-- content; a blob no row names (as bytes or thumbnail) is swept.
CREATE TABLE files (
    id           TEXT PRIMARY KEY NOT NULL,
    uploader     TEXT NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    size         BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    width        INTEGER,
    height       INTEGER,
    thumbnail    TEXT,
    created_at   BIGINT NOT NULL
);
-- A user's quota is the sum of their files' sizes.
CREATE INDEX files_by_uploader ON files (uploader);
CREATE INDEX files_by_sha256 ON files (sha256);
CREATE INDEX files_by_thumbnail ON files (thumbnail) WHERE thumbnail IS NOT NULL;
-- The sweep's oldest-first scan for files no message carries.
CREATE INDEX files_by_created ON files (created_at);

-- Which message carries which file, and in which conversation: who may
-- read the file is who is a member there. A deleted message's rows go.
CREATE TABLE message_files (
    message_id      TEXT NOT NULL,
    file_id         TEXT NOT NULL REFERENCES files (id),
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    PRIMARY KEY (message_id, file_id)
);
CREATE INDEX message_files_by_file ON message_files (file_id, conversation_id);

-- Resumable (tus) uploads: their bytes so far are in the blob store under
-- parts/{id}/, their progress here, so any node takes the next chunk. Until
-- it is complete (file_id set, in the file row's transaction) an upload's
-- length counts toward its user's quota; once complete it names its file
-- until it expires, for a client that missed the last answer.
CREATE TABLE uploads (
    id         TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id),
    length     BIGINT NOT NULL,
    received   BIGINT NOT NULL,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    file_id    TEXT
);
CREATE INDEX uploads_by_expiry ON uploads (expires_at);
