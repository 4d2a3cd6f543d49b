-- Device sessions (docs/security.md, "Sessions and revocation"): one row a
-- login on a device, ended (ended_at) by logout, logout-all, a password
-- change, account deletion, refresh token reuse or the per-user limit.
-- A user's generation voids every token issued before it moved; a deleted
-- account keeps its row, so that its name stays taken and its messages
-- keep their sender.
ALTER TABLE users ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN deleted_at BIGINT;

CREATE TABLE devices (
    id                 TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    user_id            TEXT COLLATE "C" NOT NULL REFERENCES users (id),
    name               TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    last_used_at       BIGINT NOT NULL,
    last_address       TEXT,
    -- when its newest refresh token stops being accepted
    refresh_expires_at BIGINT NOT NULL,
    ended_at           BIGINT
);
-- A user's sessions, least recently used first (the list, the limit).
CREATE INDEX devices_by_user ON devices (user_id, last_used_at);

-- Every refresh token a device session was given, as its SHA-256: the
-- current one has no rotated_at; a spent one presented again is reuse.
CREATE TABLE refresh_tokens (
    hash       TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    device_id  TEXT COLLATE "C" NOT NULL REFERENCES devices (id),
    rotated_at BIGINT
);
CREATE INDEX refresh_tokens_by_device ON refresh_tokens (device_id);
