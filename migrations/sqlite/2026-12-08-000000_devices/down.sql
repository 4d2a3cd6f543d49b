DROP TABLE refresh_tokens;
DROP TABLE devices;
ALTER TABLE users DROP COLUMN deleted_at;
ALTER TABLE users DROP COLUMN generation;
