//! File storage: the bytes of uploaded files, in one of Rocket.Chat's three backends.
//!
//! Owns [`FileStore`] (a file system directory, an S3-compatible bucket, or a MongoDB
//! GridFS bucket behind one interface), its streaming [`FileWriter`] and ranged reads. Files
//! are written and read as streams, so memory stays bounded whatever a file's size: a
//! writer holds at most one part (1 MiB on disk, 5 MiB for S3, GridFS's chunk) plus the
//! parts in flight. A file is only visible once its writer finishes; an aborted writer
//! leaves nothing behind. It must not know about uploads' records, rooms or HTTP: callers
//! name files by key.

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt as _;
use object_store::{ObjectStore, WriteMultipart};
use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use tokio_util::compat::{FuturesAsyncReadCompatExt as _, FuturesAsyncWriteCompatExt as _};

/// Why a file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("no such file")]
    NotFound,
    #[error("invalid file key")]
    InvalidKey,
    #[error("file storage misconfigured: {0}")]
    Config(String),
    #[error("file storage unavailable: {0}")]
    Unavailable(String),
}

impl From<object_store::Error> for FileError {
    fn from(err: object_store::Error) -> Self {
        match err {
            object_store::Error::NotFound { .. } => FileError::NotFound,
            other => FileError::Unavailable(other.to_string()),
        }
    }
}

impl From<mongodb::error::Error> for FileError {
    fn from(err: mongodb::error::Error) -> Self {
        match *err.kind {
            mongodb::error::ErrorKind::GridFs(mongodb::error::GridFsErrorKind::FileNotFound {
                ..
            }) => FileError::NotFound,
            _ => FileError::Unavailable(err.to_string()),
        }
    }
}

/// A file's bytes as they arrive from the backend.
pub type ByteStream = BoxStream<'static, Result<Bytes, FileError>>;

/// Where an S3-compatible bucket is and how to reach it (`FileUpload_S3_*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Options {
    pub bucket: String,
    pub region: String,
    /// The service's address (`FileUpload_S3_BucketURL`); AWS's when empty.
    pub endpoint: Option<String>,
    /// `https://endpoint/bucket/key` rather than `https://bucket.endpoint/key`.
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// Part sizes: S3 refuses parts under 5 MiB (but the last); disk writes smaller ones.
const S3_PART_BYTES: usize = 5 * 1024 * 1024;
const DISK_PART_BYTES: usize = 1024 * 1024;
/// Parts uploaded at once by one writer.
const PARTS_IN_FLIGHT: usize = 2;
/// GridFS's chunk size (the driver's default, as Rocket.Chat writes).
const GRIDFS_CHUNK_BYTES: u32 = 255 * 1024;

enum Backend {
    Objects {
        store: Arc<dyn ObjectStore>,
        part_bytes: usize,
        /// For S3: the signer of download links.
        s3: Option<Arc<object_store::aws::AmazonS3>>,
    },
    GridFs(mongodb::gridfs::GridFsBucket),
}

/// One backend's files.
pub struct FileStore {
    backend: Backend,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.backend {
            Backend::Objects { s3: Some(_), .. } => "AmazonS3",
            Backend::Objects { .. } => "FileSystem",
            Backend::GridFs(_) => "GridFS",
        };
        f.debug_struct("FileStore").field("backend", &kind).finish()
    }
}

/// A key: letters, digits, `.`, `_`, `-` and `/` between non-empty segments; never `..`.
fn object_path(key: &str) -> Result<object_store::path::Path, FileError> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        });
    if !ok {
        return Err(FileError::InvalidKey);
    }
    object_store::path::Path::parse(key).map_err(|_| FileError::InvalidKey)
}

impl FileStore {
    /// Files under `dir` on this machine's disk (made when missing).
    pub fn file_system(dir: &FsPath) -> Result<Self, FileError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| FileError::Config(format!("cannot create {}: {e}", dir.display())))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| FileError::Config(e.to_string()))?;
        Ok(Self {
            backend: Backend::Objects {
                store: Arc::new(store),
                part_bytes: DISK_PART_BYTES,
                s3: None,
            },
        })
    }

    /// Files in an S3-compatible bucket.
    pub fn s3(options: &S3Options) -> Result<Self, FileError> {
        if options.bucket.is_empty() {
            return Err(FileError::Config("FileUpload_S3_Bucket is empty".into()));
        }
        let mut builder = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&options.bucket)
            .with_region(if options.region.is_empty() {
                "us-east-1"
            } else {
                &options.region
            })
            .with_access_key_id(&options.access_key_id)
            .with_secret_access_key(&options.secret_access_key)
            .with_virtual_hosted_style_request(!options.path_style);
        if let Some(endpoint) = options.endpoint.as_deref().filter(|e| !e.is_empty()) {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let s3 = Arc::new(
            builder
                .build()
                .map_err(|e| FileError::Config(e.to_string()))?,
        );
        Ok(Self {
            backend: Backend::Objects {
                store: s3.clone(),
                part_bytes: S3_PART_BYTES,
                s3: Some(s3),
            },
        })
    }

    /// Files in the GridFS bucket `bucket` (`<bucket>.files` and `<bucket>.chunks`).
    pub fn gridfs(db: &mongodb::Database, bucket: &str) -> Self {
        let options = mongodb::options::GridFsBucketOptions::builder()
            .bucket_name(bucket.to_owned())
            .chunk_size_bytes(GRIDFS_CHUNK_BYTES)
            .build();
        Self {
            backend: Backend::GridFs(db.gridfs_bucket(options)),
        }
    }

    /// A writer of the new file `key`; `filename` is what GridFS records beside it.
    pub async fn create(&self, key: &str, filename: &str) -> Result<FileWriter, FileError> {
        let path = object_path(key)?;
        let inner = match &self.backend {
            Backend::Objects {
                store, part_bytes, ..
            } => {
                let upload = store.put_multipart(&path).await?;
                Writer::Objects(WriteMultipart::new_with_chunk_size(upload, *part_bytes))
            }
            Backend::GridFs(bucket) => {
                let stream = bucket
                    .open_upload_stream(filename)
                    .id(mongodb::bson::Bson::String(key.to_owned()))
                    .await?;
                Writer::GridFs(Box::new(stream.compat_write()))
            }
        };
        Ok(FileWriter { inner, written: 0 })
    }

    /// The size of `key`.
    pub async fn size(&self, key: &str) -> Result<u64, FileError> {
        let path = object_path(key)?;
        match &self.backend {
            Backend::Objects { store, .. } => Ok(store.head(&path).await?.size),
            Backend::GridFs(bucket) => {
                let found = bucket
                    .find_one(mongodb::bson::doc! {"_id": key})
                    .await?
                    .ok_or(FileError::NotFound)?;
                Ok(found.length)
            }
        }
    }

    /// The bytes of `key`, all or the `range` asked for (which the caller has checked
    /// against the size).
    pub async fn read(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, FileError> {
        let path = object_path(key)?;
        match &self.backend {
            Backend::Objects { store, .. } => {
                let options = object_store::GetOptions {
                    range: range.map(object_store::GetRange::Bounded),
                    ..object_store::GetOptions::default()
                };
                let got = store.get_opts(&path, options).await?;
                Ok(got
                    .into_stream()
                    .map(|r| r.map_err(FileError::from))
                    .boxed())
            }
            Backend::GridFs(bucket) => {
                use tokio::io::AsyncReadExt as _;
                let stream = bucket
                    .open_download_stream(mongodb::bson::Bson::String(key.to_owned()))
                    .await?;
                let mut reader = stream.compat();
                let (start, len) = match range {
                    Some(r) => (r.start, r.end - r.start),
                    None => (0, u64::MAX),
                };
                if start > 0 {
                    // GridFS has no ranged read in the driver: what precedes is read and
                    // dropped, a chunk at a time.
                    tokio::io::copy(&mut (&mut reader).take(start), &mut tokio::io::sink())
                        .await
                        .map_err(|e| FileError::Unavailable(e.to_string()))?;
                }
                let limited = reader.take(len);
                Ok(
                    tokio_util::io::ReaderStream::with_capacity(limited, 64 * 1024)
                        .map(|r| r.map_err(|e| FileError::Unavailable(e.to_string())))
                        .boxed(),
                )
            }
        }
    }

    /// Removes `key`; a file already gone is no error.
    pub async fn delete(&self, key: &str) -> Result<(), FileError> {
        let path = object_path(key)?;
        let outcome = match &self.backend {
            Backend::Objects { store, .. } => store.delete(&path).await.map_err(FileError::from),
            Backend::GridFs(bucket) => bucket
                .delete(mongodb::bson::Bson::String(key.to_owned()))
                .await
                .map_err(FileError::from),
        };
        match outcome {
            Ok(()) | Err(FileError::NotFound) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// A link that lets its holder read `key` directly from the bucket for `expires_in`
    /// (S3 only; other backends are always read through comet).
    pub async fn signed_url(&self, key: &str, expires_in: Duration) -> Option<String> {
        use object_store::signer::Signer as _;
        let Backend::Objects { s3: Some(s3), .. } = &self.backend else {
            return None;
        };
        let path = object_path(key).ok()?;
        s3.signed_url(hyper::Method::GET, &path, expires_in)
            .await
            .ok()
            .map(|u| u.to_string())
    }
}

enum Writer {
    Objects(WriteMultipart),
    GridFs(Box<tokio_util::compat::Compat<mongodb::gridfs::GridFsUploadStream>>),
}

/// A file being written. Dropping it without [`FileWriter::finish`] is an abort, though
/// [`FileWriter::abort`] says so at once (and waits for what was written to go).
pub struct FileWriter {
    inner: Writer,
    written: u64,
}

impl FileWriter {
    /// Appends `chunk`, waiting while the parts in flight are at their limit.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), FileError> {
        match &mut self.inner {
            Writer::Objects(upload) => {
                upload.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                upload.write(chunk);
            }
            Writer::GridFs(stream) => stream
                .write_all(chunk)
                .await
                .map_err(|e| FileError::Unavailable(e.to_string()))?,
        }
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Makes the file visible; its size.
    pub async fn finish(self) -> Result<u64, FileError> {
        match self.inner {
            Writer::Objects(upload) => {
                upload.finish().await?;
            }
            Writer::GridFs(mut stream) => stream
                .shutdown()
                .await
                .map_err(|e| FileError::Unavailable(e.to_string()))?,
        }
        Ok(self.written)
    }

    /// Drops what was written.
    pub async fn abort(self) {
        let outcome = match self.inner {
            Writer::Objects(upload) => upload.abort().await.map_err(FileError::from),
            Writer::GridFs(mut stream) => stream.get_mut().abort().await.map_err(FileError::from),
        };
        if let Err(err) = outcome {
            tracing::warn!(%err, "an unfinished file could not be removed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_plain_names_never_a_way_out_of_the_store() {
        assert!(object_path("abc123").is_ok());
        assert!(object_path("abc123.png").is_ok());
        assert!(object_path("uid/uploads/rid/user/abc").is_ok());
        for bad in [
            "", "../x", "a/../b", "/abs", "a//b", "a b", "a\\b", "a/", ".",
        ] {
            assert!(object_path(bad).is_err(), "{bad:?}");
        }
    }

    async fn written(store: &FileStore, key: &str, parts: &[&[u8]]) -> u64 {
        let mut writer = store.create(key, "name.bin").await.expect("create");
        for part in parts {
            writer.write(part).await.expect("write");
        }
        writer.finish().await.expect("finish")
    }

    async fn read_all(store: &FileStore, key: &str, range: Option<Range<u64>>) -> Vec<u8> {
        let mut stream = store.read(key, range).await.expect("read");
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.expect("chunk"));
        }
        out
    }

    #[tokio::test]
    async fn the_file_system_backend_writes_reads_ranges_and_deletes_on_disk() {
        let dir =
            std::env::temp_dir().join(format!("comet-files-{}", crate::model::random::random_id()));
        let store = FileStore::file_system(&dir).expect("store");
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let size = written(&store, "f1", &[&body[..1_000_000], &body[1_000_000..]]).await;
        assert_eq!(size, body.len() as u64);
        assert_eq!(store.size("f1").await.expect("size"), body.len() as u64);
        assert_eq!(read_all(&store, "f1", None).await, body);
        assert_eq!(
            read_all(&store, "f1", Some(10..20)).await,
            body[10..20].to_vec()
        );
        store.delete("f1").await.expect("delete");
        assert!(matches!(store.size("f1").await, Err(FileError::NotFound)));
        store.delete("f1").await.expect("deleting twice is fine");

        // An aborted writer leaves no file and nothing staged beside it.
        let mut writer = store.create("f2", "x").await.expect("create");
        writer.write(&body[..2_500_000]).await.expect("write");
        writer.abort().await;
        assert!(matches!(store.size("f2").await, Err(FileError::NotFound)));
        let left: Vec<_> = std::fs::read_dir(&dir).expect("dir").collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
