-- Files carried by messages: their metadata as a JSON array on the
-- message (NULL when none), so that history reads no other table.
ALTER TABLE messages ADD COLUMN attachments TEXT;

-- Uploaded files (docs/files.md): one row an upload. The bytes are in the
-- blob store under their SHA-256, shared by every row with the same
-- content; a blob no row names (as bytes or thumbnail) is swept.
CREATE TABLE files (
    id           TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    uploader     TEXT COLLATE "C" NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    size         BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    sha256       TEXT COLLATE "C" NOT NULL,
    width        INTEGER,
    height       INTEGER,
    thumbnail    TEXT COLLATE "C",
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
    message_id      TEXT COLLATE "C" NOT NULL,
    file_id         TEXT COLLATE "C" NOT NULL REFERENCES files (id),
    conversation_id TEXT COLLATE "C" NOT NULL REFERENCES conversations (id),
    PRIMARY KEY (message_id, file_id)
);
CREATE INDEX message_files_by_file ON message_files (file_id, conversation_id);

-- Resumable (tus) uploads: their bytes so far are in the blob store under
-- parts/{id}/, their progress here, so any node takes the next chunk. Until
-- it is complete (file_id set, in the file row's transaction) an upload's
-- length counts toward its user's quota; once complete it names its file
-- until it expires, for a client that missed the last answer.
CREATE TABLE uploads (
    id         TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    user_id    TEXT COLLATE "C" NOT NULL REFERENCES users (id),
    length     BIGINT NOT NULL,
    received   BIGINT NOT NULL,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    file_id    TEXT COLLATE "C"
);
CREATE INDEX uploads_by_expiry ON uploads (expires_at);
