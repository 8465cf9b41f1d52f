-- events.remote_id is the event's de-duplication key on its channel (the
-- network's message id unless the adapter gave a key of its own: edits and
-- reactions do); message_id is the network's id of the message an event
-- created, which references resolve against.
ALTER TABLE events ADD COLUMN message_id TEXT;
UPDATE events SET message_id = remote_id WHERE kind IN ('message', 'notice');
CREATE INDEX events_message ON events (account, channel, message_id);

-- Each account's own key-value space (ghost users registered, uploads).
CREATE TABLE adapter_state (
    account TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (account, key)
);
