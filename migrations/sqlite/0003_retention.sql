-- Retention (see src/store/retention.rs): what lets old history be deleted
-- by index, and blobs be collected when nothing uses them any more.

-- Which blobs each event uses: its attachments and its author's avatar.
-- Blob downloads find their gateways here, and a blob no kept event uses
-- can be collected. Filled at ingest; events stored before this migration
-- are filled in by a one-time pass at start (`store::backfill`), which
-- decodes bodies as the hub does and skips ones it cannot decode, where
-- JSON functions in SQL would differ per backend and fail on a damaged row.
CREATE TABLE blob_refs (
    sha256 TEXT NOT NULL,
    event_id BIGINT NOT NULL REFERENCES events (id),
    PRIMARY KEY (sha256, event_id)
);
CREATE INDEX blob_refs_event ON blob_refs (event_id);

-- The event an edit, delete, reaction or reply refers to, once resolved:
-- the target of an undelivered one is kept. Not a foreign key: an edit may
-- outlive the message it changed.
ALTER TABLE events ADD COLUMN target_id BIGINT;
CREATE INDEX events_target ON events (target_id) WHERE target_id IS NOT NULL;

-- When a blob was stored (or stored again): a blob no event uses yet (its
-- message is still being committed) is young and kept. Existing blobs count
-- as old; those no kept event uses go at the first pass.
ALTER TABLE blobs ADD COLUMN created_ms BIGINT NOT NULL DEFAULT 0;
CREATE INDEX blobs_created ON blobs (created_ms);

-- Feed and outbox rows are pruned through their event, and deleting an
-- event checks both for rows still referring to it.
CREATE INDEX feed_event ON feed (event_id);
CREATE INDEX outbox_event ON outbox (event_id);

-- Asks for the backfill pass; its value is the last event id done, so an
-- interrupted pass resumes. The pass deletes the row when it is finished.
INSERT INTO cursors (account, name, value) VALUES ('switchboard', 'backfill_0003', '0');
