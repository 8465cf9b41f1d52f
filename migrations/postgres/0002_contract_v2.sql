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

-- The second and later ids one destination gave an event (an album, a text
-- split in pieces); the first stays in message_map. part orders them.
CREATE TABLE message_parts (
    event_id BIGINT NOT NULL REFERENCES events (id),
    account TEXT NOT NULL,
    channel TEXT NOT NULL,
    part BIGINT NOT NULL,
    remote_id TEXT NOT NULL,
    PRIMARY KEY (event_id, account, channel, part)
);
CREATE INDEX message_parts_remote ON message_parts (account, channel, remote_id);

-- Channels a network moved (a Telegram group upgraded to a supergroup):
-- the gateway keeps the configured id, traffic goes to the new one.
CREATE TABLE channel_moves (
    account TEXT NOT NULL,
    from_channel TEXT NOT NULL,
    to_channel TEXT NOT NULL,
    moved_ms BIGINT NOT NULL,
    PRIMARY KEY (account, from_channel)
);
