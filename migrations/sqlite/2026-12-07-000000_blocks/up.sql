-- Who blocks whom: one row per pair, made by blockUser, removed by
-- unblockUser. The primary key answers "whom does X block"; the index,
-- "who blocks Y" (presence, invitations, and the writer's check of a
-- direct conversation). The rowid orders blocks as they were made.
CREATE TABLE blocks (
    blocker    TEXT NOT NULL REFERENCES users (id),
    blocked    TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (blocker, blocked)
);
CREATE INDEX blocks_by_blocked ON blocks (blocked, blocker);
