-- Events as committed; (account, channel, remote_id) recognises redeliveries.
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    channel TEXT NOT NULL,
    remote_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    origin_token TEXT,
    body TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    UNIQUE (account, channel, remote_id)
);

-- What bot API consumers read, in commit order; seq is their cursor.
CREATE TABLE feed (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    gateway TEXT NOT NULL,
    event_id BIGINT NOT NULL REFERENCES events (id),
    origin_token TEXT
);
CREATE INDEX feed_gateway_seq ON feed (gateway, seq);

-- Event id -> the id each destination gave it.
CREATE TABLE message_map (
    event_id BIGINT NOT NULL REFERENCES events (id),
    account TEXT NOT NULL,
    channel TEXT NOT NULL,
    remote_id TEXT NOT NULL,
    PRIMARY KEY (event_id, account, channel)
);
CREATE INDEX message_map_remote ON message_map (account, channel, remote_id);

-- One row per (event, destination); state is pending, sent or dead.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id BIGINT NOT NULL REFERENCES events (id),
    gateway TEXT NOT NULL,
    account TEXT NOT NULL,
    channel TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts BIGINT NOT NULL DEFAULT 0,
    parts_sent BIGINT NOT NULL DEFAULT 0,
    idempotency_key TEXT NOT NULL,
    last_error TEXT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX outbox_lane ON outbox (account, channel, state, id);

-- Attachment bytes by SHA-256.
CREATE TABLE blobs (
    sha256 TEXT PRIMARY KEY,
    mime TEXT NOT NULL,
    size BIGINT NOT NULL,
    data BLOB NOT NULL
);

-- Per-account network cursors (update offsets, sync tokens).
CREATE TABLE cursors (
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (account, name)
);

-- Per-consumer feed cursors of API tokens.
CREATE TABLE api_cursors (
    token TEXT NOT NULL,
    consumer TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (token, consumer)
);
