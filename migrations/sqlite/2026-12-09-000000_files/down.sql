DROP TABLE uploads;
DROP TABLE message_files;
DROP TABLE files;

DROP TRIGGER messages_changed;
DROP VIEW messages;
ALTER TABLE message_rows DROP COLUMN attachments;
CREATE VIEW messages AS
SELECT m.id AS id, c.id AS conversation_id, m.seq AS seq, u.id AS sender_id,
       m.body AS body, m.client_msg_id AS client_msg_id, m.created_at AS created_at,
       m.edited_at AS edited_at, m.deleted AS deleted
FROM message_rows m
JOIN conversation_keys c ON c.key = m.conversation
JOIN user_keys u ON u.key = m.sender;
CREATE TRIGGER messages_changed INSTEAD OF UPDATE ON messages
BEGIN
    UPDATE message_rows
    SET body = NEW.body, edited_at = NEW.edited_at, deleted = NEW.deleted
    WHERE id = OLD.id;
END;
