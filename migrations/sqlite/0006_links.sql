-- Links made from the chats themselves (src/links): one row per chat a
-- pairing code (or the admin API) put in a gateway, on top of the
-- configuration's gateways. A chat is in one such gateway at most.
CREATE TABLE links (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    gateway TEXT NOT NULL,
    account TEXT NOT NULL,
    channel TEXT NOT NULL,
    name TEXT,
    created_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    UNIQUE (account, channel)
);
CREATE INDEX links_gateway ON links (gateway);

-- Pairing codes, by the SHA-256 of the code (never the code itself):
-- single use (used_ms), valid until expires_ms. Kept a day after they
-- expire, so a late try is told the code expired rather than unknown.
CREATE TABLE link_codes (
    hash TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    channel TEXT NOT NULL,
    name TEXT,
    created_by TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    used_ms BIGINT
);

-- Wrong codes sent in a chat: a chat may send [links] attempts of them
-- within attempts_window.
CREATE TABLE link_failures (
    account TEXT NOT NULL,
    channel TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX link_failures_chat ON link_failures (account, channel, at_ms);
