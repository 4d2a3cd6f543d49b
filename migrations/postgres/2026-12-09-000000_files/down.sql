DROP TABLE uploads;
DROP TABLE message_files;
DROP TABLE files;
ALTER TABLE messages DROP COLUMN attachments;
