//! Blobs: attachment bytes by SHA-256. A small file is one row of `blobs`;
//! a large one is written as it arrives, a chunk at a time, so neither the
//! API nor the database driver ever holds a whole file.
//!
//! An upload ([`BlobUpload`]) hashes what it is given and buffers up to
//! [`CHUNK`] bytes; each full chunk goes through the writer as a row of
//! `blob_chunks` under the upload's random id. At the end the writer
//! checks that every chunk is there and writes the blob's row pointing at
//! them, or, when the same bytes were stored before, deletes the new
//! chunks and keeps the old blob. A file of at most one chunk is written as
//! one row, as before chunks existed. An upload dropped before its end (the
//! client went away, the body was too large) has its chunks deleted; those
//! of a process that died meanwhile are collected by retention once they
//! are older than [`UNFINISHED`].
//!
//! Reading: [`Store::blob`] assembles a whole file (adapters send it in one
//! request anyway); [`Store::blob_row`] and [`Store::blob_chunk`] let the
//! download route stream it a chunk at a time.

use std::time::Duration;

use rand::Rng;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::writer::{BlobPart, WriterHandle};
use super::{Store, StoreError};

/// Bytes per chunk of a large blob, and the largest blob stored in one row.
pub const CHUNK: usize = 1 << 20;

/// Chunks of an upload that has not finished after this long are
/// collected (its client, or the process, went away).
pub const UNFINISHED: Duration = Duration::from_secs(3600);

/// Leading bytes kept for guessing a file's type.
const HEAD: usize = 8192;

/// A blob being stored, written as it arrives.
pub struct BlobUpload {
    writer: WriterHandle,
    upload: String,
    hasher: Sha256,
    size: u64,
    /// What is not written yet: less than a chunk.
    buf: Vec<u8>,
    /// Chunks written so far.
    chunks: i64,
    head: Vec<u8>,
    done: bool,
}

/// A blob the store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

impl BlobUpload {
    /// Starts an upload.
    #[must_use]
    pub fn new(writer: WriterHandle) -> Self {
        Self {
            writer,
            upload: format!("{:032x}", rand::thread_rng().gen::<u128>()),
            hasher: Sha256::new(),
            size: 0,
            buf: Vec::new(),
            chunks: 0,
            head: Vec::new(),
            done: false,
        }
    }

    /// Adds bytes; every chunk that fills is written before this returns.
    ///
    /// # Errors
    /// When the writer could not store a chunk.
    pub async fn write(&mut self, mut bytes: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        if self.head.len() < HEAD {
            let take = (HEAD - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
        }
        while !bytes.is_empty() {
            let take = (CHUNK - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() == CHUNK {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        let data = std::mem::take(&mut self.buf);
        let seq = self.chunks;
        self.chunks += 1;
        self.writer
            .blob_part(BlobPart::Chunk {
                upload: self.upload.clone(),
                seq,
                data,
            })
            .await
    }

    /// The first bytes (up to 8 KiB), for guessing the type.
    #[must_use]
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// Bytes given so far.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Stores what is left and the blob's row; returns after the commit.
    ///
    /// # Errors
    /// When the writer could not store it.
    pub async fn finish(mut self, mime: String) -> Result<StoredBlob, StoreError> {
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let size = self.size;
        if self.chunks == 0 {
            let data = std::mem::take(&mut self.buf);
            self.done = true;
            self.writer.blob(sha256.clone(), mime, data).await?;
        } else {
            if !self.buf.is_empty() {
                self.flush().await?;
            }
            let result = self
                .writer
                .blob_part(BlobPart::Finish {
                    upload: self.upload.clone(),
                    sha256: sha256.clone(),
                    mime,
                    size,
                    chunks: self.chunks,
                })
                .await;
            // Committed or not, its chunks are the finish's business now:
            // a failed finish leaves them to the drop below.
            self.done = result.is_ok();
            result?;
        }
        Ok(StoredBlob { sha256, size })
    }
}

impl Drop for BlobUpload {
    /// An upload that did not finish deletes the chunks it wrote, in the
    /// background; retention collects them if this does not happen.
    fn drop(&mut self) {
        if self.done || self.chunks == 0 {
            return;
        }
        let (writer, upload) = (self.writer.clone(), std::mem::take(&mut self.upload));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = writer.blob_part(BlobPart::Abort { upload }).await;
            });
        }
    }
}

/// Where a stored blob's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobContent {
    /// In its row.
    Inline(Vec<u8>),
    /// In `blob_chunks`, under this upload id, from chunk 0 on.
    Chunks(String),
}

/// A stored blob's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRow {
    /// MIME type.
    pub mime: String,
    /// Size in bytes.
    pub size: u64,
    /// The bytes, or where they are.
    pub content: BlobContent,
}

impl Store {
    /// A stored blob's row: its type, size and bytes (inline) or where its
    /// chunks are.
    ///
    /// # Errors
    /// On database failure.
    pub async fn blob_row(&self, sha256: &str) -> Result<Option<BlobRow>, StoreError> {
        let row = sqlx::query("SELECT mime, size, upload, data FROM blobs WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let upload: Option<String> = row.try_get(2)?;
        Ok(Some(BlobRow {
            mime: row.try_get(0)?,
            size: u64::try_from(row.try_get::<i64, _>(1)?).unwrap_or_default(),
            content: match upload {
                Some(u) => BlobContent::Chunks(u),
                None => BlobContent::Inline(row.try_get(3)?),
            },
        }))
    }

    /// Chunk `seq` of an upload; `None` past the last.
    ///
    /// # Errors
    /// On database failure.
    pub async fn blob_chunk(&self, upload: &str, seq: i64) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT data FROM blob_chunks WHERE upload = $1 AND seq = $2")
            .bind(upload)
            .bind(seq)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok(r.try_get(0)?)).transpose()
    }

    /// A stored blob's MIME type and bytes, whole.
    ///
    /// # Errors
    /// On database failure, or when chunks are missing.
    pub async fn blob(&self, sha256: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let Some(row) = self.blob_row(sha256).await? else {
            return Ok(None);
        };
        let data = match row.content {
            BlobContent::Inline(data) => data,
            BlobContent::Chunks(upload) => {
                let mut data = Vec::with_capacity(usize::try_from(row.size).unwrap_or(0));
                let mut seq = 0;
                while let Some(chunk) = self.blob_chunk(&upload, seq).await? {
                    data.extend_from_slice(&chunk);
                    seq += 1;
                }
                if data.len() as u64 != row.size {
                    return Err(StoreError::Corrupt(format!(
                        "blob {sha256}: {} of {} bytes found",
                        data.len(),
                        row.size
                    )));
                }
                data
            }
        };
        Ok(Some((row.mime, data)))
    }
}
