-- Who blocks whom, as in migrations/sqlite: one row per pair, made by
-- blockUser, removed by unblockUser. The primary key answers "whom does X
-- block"; the index, "who blocks Y" (presence, invitations, and every
-- append's check of a direct conversation).
CREATE TABLE blocks (
    blocker    TEXT COLLATE "C" NOT NULL REFERENCES users (id),
    blocked    TEXT COLLATE "C" NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    -- grows with every insert: the order blocks were made in, even within
    -- one millisecond (SQLite has its rowid)
    block_order BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (blocker, blocked)
);
CREATE INDEX blocks_by_blocked ON blocks (blocked, blocker);
