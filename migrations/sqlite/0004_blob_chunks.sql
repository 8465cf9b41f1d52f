-- Large blobs in pieces (see src/store/blobs.rs): an upload is written as
-- it arrives, a chunk at a time, so neither the API nor the database
-- driver holds a whole file in memory. `upload` names one upload's chunks
-- (a random id: the SHA-256 is known only at its end); the blob's row,
-- written last, points at them. A blob whose `upload` is NULL has its
-- bytes in `blobs.data` (small files, and everything stored before).
CREATE TABLE blob_chunks (
    upload TEXT NOT NULL,
    seq BIGINT NOT NULL,
    data BLOB NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (upload, seq)
);
-- Chunks of uploads that never finished are collected by age.
CREATE INDEX blob_chunks_created ON blob_chunks (created_ms);

ALTER TABLE blobs ADD COLUMN upload TEXT;
CREATE INDEX blobs_upload ON blobs (upload) WHERE upload IS NOT NULL;
