//! The Upload service: files and images sent to rooms, their records in
//! `rocketchat_uploads`, the messages that carry them, and who may read them.
//!
//! Every upload takes one path, [`Uploads::receive`]: the caller must be able to post in
//! the room; the type is decided from the first bytes (`chat::media::sniff`) and checked against
//! `FileUpload_MediaTypeWhiteList` / `BlackList`; the size against `FileUpload_MaxFileSize`
//! as the bytes arrive, so an oversized body is refused at the byte that crosses the limit
//! and what was written goes; images are measured, previewed, thumbnailed and stripped of
//! their metadata (`chat::media::images`); then the *file will be uploaded* hook may refuse or rename
//! it; only then is the record stored. A file's message is sent through the Messaging
//! service's one path ([`Uploads::send_file_message`]).
//!
//! The bytes live in the backend `FileUpload_Storage_Type` names (FileSystem, GridFS,
//! AmazonS3; `storage::files`); each record says which, so files stay readable when the
//! setting changes. Files go when their message is deleted (unless history is kept) and
//! when their room is erased. It must not know about HTTP: the REST layer hands it a
//! stream of chunks and sends what [`Uploads::open`] gives back.

pub mod methods;

use crate::chat::call::Call;
use crate::chat::collections::UPLOADS;
use crate::chat::hooks::{will_hook, ChatHooks, FileEvent, HookFuture, Hooks, Point};
use crate::chat::media::{images, sniff};
use crate::chat::messages::{Messages, Outgoing};
use crate::chat::rooms::Rooms;
use crate::chat::settings::Settings;
use crate::chat::{client_error, date, text};
use crate::engine::build::{doc, now_ms, selector, update};
use crate::engine::ServiceError;
use crate::model::{Document, Value};
use crate::storage::files::{ByteStream, FileError, FileStore, S3Options};
use crate::storage::{FindOptions, RemoveOptions, Store, UpdateOptions};
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The bytes of a file as they arrive; an `Err` is the client's stream breaking off.
pub type Chunks<'a> = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send + 'a>>;

/// Images up to this size are processed in memory (measured, previewed, stripped); larger
/// ones are refused while metadata must be stripped, else stored as they are.
pub const MAX_IMAGE_BYTES: usize = 32 * 1024 * 1024;
/// How long an unconfirmed `rooms.media` upload is kept.
const TEMPORARY_FOR_MS: f64 = 24.0 * 3600.0 * 1000.0;

/// A file arriving: what the client calls it and claims it is, and its bytes.
pub struct Incoming<'a> {
    pub name: String,
    pub claimed_type: String,
    pub chunks: Chunks<'a>,
}

/// What the upload is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A message's file, sent at once (`rooms.upload`, the web chat).
    Message,
    /// A file waiting for `rooms.mediaConfirm` (kept 24 hours).
    Temporary,
}

/// A message's text and options around a file (`rooms.mediaConfirm`'s body,
/// `rooms.upload`'s fields).
#[derive(Clone, Debug, Default)]
pub struct FileMessage {
    pub msg: String,
    pub description: Option<String>,
    pub tmid: Option<String>,
    pub tshow: bool,
    pub alias: Option<String>,
    pub emoji: Option<String>,
    pub avatar: Option<String>,
    pub groupable: Option<bool>,
    pub custom_fields: Option<Value>,
    /// A new name for the file.
    pub file_name: Option<String>,
}

/// Which backend a record's bytes are in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    FileSystem,
    GridFs,
    AmazonS3,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::FileSystem => "FileSystem",
            Backend::GridFs => "GridFS",
            Backend::AmazonS3 => "AmazonS3",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "FileSystem" => Some(Backend::FileSystem),
            "GridFS" => Some(Backend::GridFs),
            "AmazonS3" => Some(Backend::AmazonS3),
            _ => None,
        }
    }
}

/// An upload's bytes, ready to be read by someone allowed to.
pub struct Readable {
    pub id: String,
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub etag: String,
    pub uploaded_at_ms: Option<f64>,
    store: Arc<FileStore>,
    key: String,
    /// S3 without proxying: where a reader is sent instead.
    redirect_for: Option<Duration>,
}

impl Readable {
    /// The bytes, all or `range`.
    pub async fn read(
        &self,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<ByteStream, ServiceError> {
        self.store.read(&self.key, range).await.map_err(file_error)
    }

    /// A signed link to the bucket, when downloads are redirected there.
    pub async fn redirect(&self) -> Option<String> {
        let expiry = self.redirect_for?;
        self.store.signed_url(&self.key, expiry).await
    }
}

fn file_error(err: FileError) -> ServiceError {
    match err {
        FileError::NotFound => client_error("error-file-not-found", "The file is gone"),
        other => ServiceError::Internal(other.to_string()),
    }
}

fn too_large() -> ServiceError {
    client_error(
        "error-file-too-large",
        "File exceeds allowed size of FileUpload_MaxFileSize",
    )
}

/// The Upload service.
pub struct Uploads {
    store: Arc<dyn Store>,
    rooms: Arc<Rooms>,
    messages: Arc<Messages>,
    settings: Arc<Settings>,
    hooks: Arc<Hooks>,
    data_dir: PathBuf,
    mongo: Option<mongodb::Database>,
    /// The backends built so far, each under the settings it was built from.
    built: Mutex<HashMap<Backend, (String, Arc<FileStore>)>>,
    /// Images processed at once (decoding is CPU and memory heavy).
    image_work: Arc<tokio::sync::Semaphore>,
}

impl Uploads {
    /// The service; `mongo` is the database when the store is MongoDB (for GridFS).
    pub async fn start(
        store: Arc<dyn Store>,
        rooms: Arc<Rooms>,
        messages: Arc<Messages>,
        settings: Arc<Settings>,
        hooks: Arc<Hooks>,
        data_dir: PathBuf,
        mongo: Option<mongodb::Database>,
    ) -> Result<Arc<Self>, ServiceError> {
        for keys in [
            serde_json::json!({"rid": 1, "uploadedAt": -1}),
            serde_json::json!({"userId": 1}),
        ] {
            let sort = crate::model::query::Sort::parse(&doc(keys)?)
                .map_err(|e| ServiceError::Internal(e.to_string()))?;
            store
                .ensure_index(UPLOADS, sort)
                .await
                .map_err(|e| ServiceError::from_store(&e))?;
        }
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let uploads = Arc::new(Self {
            store,
            rooms,
            messages,
            settings,
            hooks: hooks.clone(),
            data_dir,
            mongo,
            built: Mutex::new(HashMap::new()),
            image_work: Arc::new(tokio::sync::Semaphore::new(workers)),
        });
        hooks.add(Arc::new(Cleanup(Arc::downgrade(&uploads))));
        Ok(uploads)
    }

    fn setting_text(&self, id: &str) -> String {
        self.settings
            .value(id)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// The backend new files go to: the setting's, or the file system where GridFS is
    /// named without MongoDB (the embedded store's default).
    fn current_backend(&self) -> Backend {
        match Backend::parse(&self.setting_text("FileUpload_Storage_Type")) {
            Some(Backend::GridFs) if self.mongo.is_none() => Backend::FileSystem,
            Some(kind) => kind,
            None if self.mongo.is_some() => Backend::GridFs,
            None => Backend::FileSystem,
        }
    }

    fn s3_options(&self) -> S3Options {
        S3Options {
            bucket: self.setting_text("FileUpload_S3_Bucket"),
            region: self.setting_text("FileUpload_S3_Region"),
            endpoint: Some(self.setting_text("FileUpload_S3_BucketURL")).filter(|e| !e.is_empty()),
            path_style: self.settings.flag("FileUpload_S3_ForcePathStyle", false),
            access_key_id: self.setting_text("FileUpload_S3_AWSAccessKeyId"),
            secret_access_key: self.setting_text("FileUpload_S3_AWSSecretAccessKey"),
        }
    }

    fn file_system_dir(&self) -> PathBuf {
        let named = self.setting_text("FileUpload_FileSystemPath");
        if named.trim().is_empty() {
            self.data_dir.join("uploads")
        } else {
            PathBuf::from(named.trim())
        }
    }

    /// The backend `kind` as the settings describe it now (built again when they changed).
    fn backend(&self, kind: Backend) -> Result<Arc<FileStore>, ServiceError> {
        let fingerprint = match kind {
            Backend::FileSystem => self.file_system_dir().display().to_string(),
            Backend::GridFs => "rocketchat_uploads".to_owned(),
            Backend::AmazonS3 => format!("{:?}", self.s3_options()),
        };
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, store)) = built.get(&kind) {
            if *seen == fingerprint {
                return Ok(store.clone());
            }
        }
        let store = match kind {
            Backend::FileSystem => FileStore::file_system(&self.file_system_dir()),
            Backend::GridFs => match &self.mongo {
                Some(db) => Ok(FileStore::gridfs(db, "rocketchat_uploads")),
                None => Err(FileError::Config("GridFS needs MongoDB".into())),
            },
            Backend::AmazonS3 => FileStore::s3(&self.s3_options()),
        }
        .map(Arc::new)
        .map_err(|e| {
            tracing::error!(backend = kind.name(), err = %e, "file storage cannot be used");
            client_error("error-file-storage", "File storage is not available")
        })?;
        built.insert(kind, (fingerprint, store.clone()));
        Ok(store)
    }

    /// The key of a record's bytes in its backend.
    fn key_of(record: &Document, kind: Backend) -> Option<String> {
        match kind {
            Backend::AmazonS3 => record
                .get("AmazonS3")
                .and_then(Value::as_object)
                .and_then(|o| text(o, "path"))
                .map(str::to_owned),
            _ => text(record, "_id").map(str::to_owned),
        }
    }

    fn max_size(&self) -> Option<u64> {
        let max = self
            .settings
            .number("FileUpload_MaxFileSize", 104_857_600.0);
        (max >= 0.0).then_some(max as u64)
    }

    /// Checks the type against the settings' lists.
    fn check_type(&self, content_type: &str) -> Result<(), ServiceError> {
        let white = self.setting_text("FileUpload_MediaTypeWhiteList");
        let black = self.setting_text("FileUpload_MediaTypeBlackList");
        let allowed = !sniff::listed(content_type, &black)
            && (white.trim().is_empty() || sniff::listed(content_type, &white));
        if allowed {
            Ok(())
        } else {
            Err(client_error(
                "error-invalid-file-type",
                &format!("File type {content_type} is not accepted"),
            ))
        }
    }

    /// Whether the caller may upload to `rid` now (uploads on, and they may post there):
    /// the room when so.
    pub async fn may_upload_to(
        &self,
        call: &Call<'_>,
        rid: &str,
    ) -> Result<Document, ServiceError> {
        call.require_user()?;
        if !self.settings.flag("FileUpload_Enabled", true) {
            return Err(client_error(
                "error-file-upload-disabled",
                "File upload is disabled",
            ));
        }
        self.messages.may_post_in(call, rid).await
    }

    /// Receives a file for `rid` from the caller: the one path every upload takes.
    pub async fn receive(
        &self,
        call: &Call<'_>,
        rid: &str,
        mut incoming: Incoming<'_>,
        purpose: Purpose,
    ) -> Result<Document, ServiceError> {
        let uid = call.require_user()?.to_owned();
        let room = self.may_upload_to(call, rid).await?;
        let user = self.rooms.caller(call.user()).await?;
        let max = self.max_size();
        let over = |n: u64| max.is_some_and(|m| n > m);

        // The first bytes decide the type.
        let mut head: Vec<u8> = Vec::new();
        let mut ended = false;
        while head.len() < sniff::SNIFF_BYTES {
            match incoming.chunks.next().await {
                Some(Ok(chunk)) => {
                    head.extend_from_slice(&chunk);
                    if over(head.len() as u64) {
                        return Err(too_large());
                    }
                }
                Some(Err(cause)) => return Err(interrupted(&cause)),
                None => {
                    ended = true;
                    break;
                }
            }
        }
        if head.is_empty() {
            return Err(client_error("error-file-empty", "The file is empty"));
        }
        let content_type = sniff::content_type(
            &head[..head.len().min(sniff::SNIFF_BYTES)],
            &incoming.claimed_type,
        );
        self.check_type(&content_type)?;
        let name = sniff::clean_name(&incoming.name);
        let id = crate::model::random::random_id();
        let kind = self.current_backend();
        let backend = self.backend(kind)?;
        let s3_path = (kind == Backend::AmazonS3).then(|| {
            format!(
                "{}/uploads/{rid}/{uid}/{id}",
                self.setting_text("uniqueID")
                    .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "")
            )
        });
        let key = s3_path.clone().unwrap_or_else(|| id.clone());

        let strip = self.settings.flag("Message_Attachments_Strip_Exif", true);
        let mut identify = None;
        let mut preview = None;
        let mut thumbnail = None;
        let size = match images::format_of(&content_type) {
            Some(format) => {
                // The whole image in memory, bounded, to measure and strip it.
                let mut bytes = head;
                while !ended {
                    match incoming.chunks.next().await {
                        Some(Ok(chunk)) => {
                            bytes.extend_from_slice(&chunk);
                            if over(bytes.len() as u64) {
                                return Err(too_large());
                            }
                            if bytes.len() > MAX_IMAGE_BYTES {
                                return Err(client_error(
                                    "error-file-too-large",
                                    "Images over 32 MiB are not accepted",
                                ));
                            }
                        }
                        Some(Err(cause)) => return Err(interrupted(&cause)),
                        None => ended = true,
                    }
                }
                let options = images::ImageOptions {
                    strip_metadata: strip,
                    thumbnail: self
                        .settings
                        .flag("Message_Attachments_Thumbnails_Enabled", true)
                        .then(|| {
                            (
                                self.settings
                                    .number("Message_Attachments_Thumbnails_Width", 480.0)
                                    .clamp(16.0, 4096.0) as u32,
                                self.settings
                                    .number("Message_Attachments_Thumbnails_Height", 360.0)
                                    .clamp(16.0, 4096.0) as u32,
                            )
                        }),
                };
                let processed = {
                    let _permit = self
                        .image_work
                        .acquire()
                        .await
                        .map_err(|_| ServiceError::Internal("image workers closed".into()))?;
                    tokio::task::spawn_blocking(move || images::process(bytes, format, options))
                        .await
                        .map_err(|e| ServiceError::Internal(e.to_string()))?
                }
                .map_err(|e| match e {
                    images::ImageError::TooLarge { .. } => {
                        client_error("error-image-too-large", &e.to_string())
                    }
                    images::ImageError::Unreadable(_) => {
                        client_error("error-invalid-image", &e.to_string())
                    }
                })?;
                let mut writer = backend.create(&key, &name).await.map_err(file_error)?;
                if let Err(err) = writer.write(&processed.bytes).await {
                    writer.abort().await;
                    return Err(file_error(err));
                }
                let size = writer.finish().await.map_err(file_error)?;
                identify = Some(serde_json::json!({
                    "format": processed.format,
                    "size": {"width": processed.width, "height": processed.height},
                }));
                preview = processed.preview;
                thumbnail = processed.thumbnail;
                size
            }
            None => {
                let mut writer = backend.create(&key, &name).await.map_err(file_error)?;
                let mut chunk = Bytes::from(head);
                loop {
                    if over(writer.written() + chunk.len() as u64) {
                        writer.abort().await;
                        return Err(too_large());
                    }
                    if let Err(err) = writer.write(&chunk).await {
                        writer.abort().await;
                        return Err(file_error(err));
                    }
                    if ended {
                        break;
                    }
                    match incoming.chunks.next().await {
                        Some(Ok(next)) => chunk = next,
                        Some(Err(cause)) => {
                            writer.abort().await;
                            return Err(interrupted(&cause));
                        }
                        None => {
                            ended = true;
                            chunk = Bytes::new();
                        }
                    }
                }
                writer.finish().await.map_err(file_error)?
            }
        };

        let now = now_ms();
        let mut record = doc(serde_json::json!({
            "_id": id, "name": name, "size": size, "type": content_type,
            "rid": rid, "userId": uid,
            "store": format!("{}:Uploads", kind.name()),
            "complete": true, "uploading": false, "progress": 1,
            "extension": sniff::extension(&name),
            "typeGroup": sniff::type_group(&content_type),
            "etag": crate::model::random::random_id(),
            "path": file_path(&id, &name), "url": file_path(&id, &name),
            "uploadedAt": date(now), "_updatedAt": date(now),
        }))?;
        if let Some(identify) = identify {
            record.insert("identify".into(), val(identify));
        }
        if let Some(path) = &s3_path {
            record.insert("AmazonS3".into(), val(serde_json::json!({"path": path})));
        }
        if purpose == Purpose::Temporary {
            record.insert("expiresAt".into(), val(date(now + TEMPORARY_FOR_MS)));
        }
        let rewritten = will_hook!(
            self.hooks,
            Point::FileWillBeUploaded,
            record,
            |hook, current| {
                hook.file_will_be_uploaded(FileEvent {
                    file: current,
                    room: &room,
                    user: &user,
                })
            }
        );
        match rewritten {
            Err(refused) => {
                let _ = backend.delete(&key).await;
                return Err(refused.into());
            }
            Ok(Some(replaced)) => {
                if let Some(name) = text(&replaced, "name") {
                    let name = sniff::clean_name(name);
                    record.insert("path".into(), Value::from(file_path(&id, &name).as_str()));
                    record.insert("url".into(), Value::from(file_path(&id, &name).as_str()));
                    record.insert("name".into(), Value::from(name.as_str()));
                }
                if let Some(description) = replaced.get("description") {
                    record.insert("description".into(), description.clone());
                }
            }
            Ok(None) => {}
        }
        if let Some(thumb) = thumbnail {
            match self
                .store_thumbnail(call, &record, thumb, kind, &backend)
                .await
            {
                Ok(stored) => {
                    record.insert("thumbnail".into(), Value::Object(stored));
                }
                Err(err) => {
                    tracing::warn!(err = %err.client_view().reason.unwrap_or_default(), "no thumbnail stored")
                }
            }
        }
        if let Some(preview) = preview {
            record.insert("preview".into(), Value::from(preview.as_str()));
        }
        let ack = self.store.insert(UPLOADS, record.clone()).await;
        match ack {
            Ok(ack) => call.record_write(ack.seq),
            Err(err) => {
                let _ = backend.delete(&key).await;
                return Err(ServiceError::from_store(&err));
            }
        }
        Ok(record)
    }

    /// Stores an image's thumbnail as an upload of its own (`typeGroup: thumb`); the part
    /// of it the original's record and message keep.
    async fn store_thumbnail(
        &self,
        call: &Call<'_>,
        original: &Document,
        thumb: images::Thumbnail,
        kind: Backend,
        backend: &FileStore,
    ) -> Result<Document, ServiceError> {
        let id = crate::model::random::random_id();
        let rid = text(original, "rid").unwrap_or_default();
        let uid = text(original, "userId").unwrap_or_default();
        let name = format!("thumb-{}", text(original, "name").unwrap_or("file"));
        let key = match kind {
            Backend::AmazonS3 => format!(
                "{}/uploads/{rid}/{uid}/{id}",
                self.setting_text("uniqueID")
                    .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "")
            ),
            _ => id.clone(),
        };
        let mut writer = backend.create(&key, &name).await.map_err(file_error)?;
        if let Err(err) = writer.write(&thumb.bytes).await {
            writer.abort().await;
            return Err(file_error(err));
        }
        let size = writer.finish().await.map_err(file_error)?;
        let now = now_ms();
        let mut record = doc(serde_json::json!({
            "_id": id, "name": name, "size": size, "type": thumb.content_type,
            "rid": rid, "userId": uid, "store": format!("{}:Uploads", kind.name()),
            "complete": true, "uploading": false, "progress": 1,
            "extension": if thumb.content_type == "image/png" { "png" } else { "jpeg" },
            "typeGroup": "thumb", "originalFileId": text(original, "_id"),
            "identify": {"format": if thumb.content_type == "image/png" { "png" } else { "jpeg" },
                         "size": {"width": thumb.width, "height": thumb.height}},
            "etag": crate::model::random::random_id(),
            "path": file_path(&id, &name), "url": file_path(&id, &name),
            "uploadedAt": date(now), "_updatedAt": date(now),
        }))?;
        if kind == Backend::AmazonS3 {
            record.insert("AmazonS3".into(), val(serde_json::json!({"path": key})));
        }
        let ack = self
            .store
            .insert(UPLOADS, record.clone())
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        call.record_write(ack.seq);
        doc(serde_json::json!({
            "_id": id, "name": name, "type": thumb.content_type, "size": size,
            "width": thumb.width, "height": thumb.height,
        }))
    }

    async fn record(&self, id: &str) -> Result<Option<Document>, ServiceError> {
        Ok(self
            .store
            .find(
                UPLOADS,
                FindOptions {
                    selector: selector(serde_json::json!({"_id": id}))?,
                    limit: Some(1),
                    ..FindOptions::default()
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?
            .pop())
    }

    /// Sends the message of an upload the caller made to `rid` (`rooms.mediaConfirm`, and
    /// the second half of `rooms.upload`); the message as stored.
    pub async fn send_file_message(
        &self,
        call: &Call<'_>,
        rid: &str,
        file_id: &str,
        options: FileMessage,
    ) -> Result<Document, ServiceError> {
        let uid = call.require_user()?;
        let invalid = || client_error("invalid-file", "Invalid file");
        let mut file = self.record(file_id).await?.ok_or_else(invalid)?;
        if text(&file, "userId") != Some(uid) || text(&file, "rid") != Some(rid) {
            return Err(invalid());
        }
        let max_text = self.settings.number("Message_MaxAllowedSize", 5000.0) as usize;
        if options
            .description
            .as_deref()
            .map_or(0, |d| d.chars().count())
            > max_text
        {
            return Err(client_error(
                "error-message-size-exceeded",
                "Message size exceeds Message_MaxAllowedSize",
            ));
        }
        let mut set = serde_json::Map::new();
        if let Some(name) = &options.file_name {
            let name = sniff::clean_name(name);
            set.insert("name".into(), name.clone().into());
            set.insert("path".into(), file_path(file_id, &name).into());
            set.insert("url".into(), file_path(file_id, &name).into());
            file.insert("name".into(), Value::from(name.as_str()));
        }
        if let Some(description) = &options.description {
            set.insert("description".into(), description.clone().into());
            file.insert("description".into(), Value::from(description.as_str()));
        }
        let (file_prop, files, attachments) = message_parts(&file);
        let message = self
            .messages
            .send(
                call,
                Outgoing {
                    rid: rid.to_owned(),
                    msg: options.msg,
                    tmid: options.tmid,
                    tshow: options.tshow,
                    alias: options.alias,
                    emoji: options.emoji,
                    avatar: options.avatar,
                    groupable: Some(options.groupable.unwrap_or(false)),
                    custom_fields: options.custom_fields,
                    attachments: Some(attachments),
                    files: Some((file_prop, files)),
                    ..Outgoing::default()
                },
            )
            .await?;
        set.insert("_updatedAt".into(), date(now_ms()));
        let ack = self
            .store
            .update(
                UPLOADS,
                selector(serde_json::json!({"_id": file_id}))?,
                update(serde_json::json!({"$set": set, "$unset": {"expiresAt": 1}}))?,
                UpdateOptions::default(),
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        call.record_write(ack.seq);
        Ok(message)
    }

    /// The upload `id` for a reader: with `FileUpload_ProtectFiles` only a user who may
    /// read its room (or who sent it). Unknown and forbidden look alike to a stranger.
    pub async fn open(&self, reader: Option<&str>, id: &str) -> Result<Readable, ServiceError> {
        let protect = self.settings.flag("FileUpload_ProtectFiles", true);
        if protect && reader.is_none() {
            return Err(client_error("401", "You must be logged in to do this."));
        }
        let forbidden = || client_error("403", "Forbidden");
        let record = self.record(id).await?.ok_or_else(forbidden)?;
        if protect {
            let uid = reader.unwrap_or_default();
            let own = text(&record, "userId") == Some(uid);
            let readable = match text(&record, "rid") {
                Some(rid) => match self.rooms.room(rid).await? {
                    Some(room) => self.rooms.can_access(&room, Some(uid)).await?,
                    None => false,
                },
                None => false,
            };
            if !own && !readable {
                return Err(forbidden());
            }
        }
        let kind = text(&record, "store")
            .and_then(|s| s.split(':').next())
            .and_then(Backend::parse)
            .unwrap_or(Backend::GridFs);
        let store = self.backend(kind)?;
        let key = Self::key_of(&record, kind).ok_or_else(forbidden)?;
        let redirect_for = (kind == Backend::AmazonS3
            && !self.settings.flag("FileUpload_S3_Proxy_Uploads", false))
        .then(|| {
            Duration::from_secs(
                self.settings
                    .number("FileUpload_S3_URLExpiryTimeSpan", 120.0)
                    .clamp(1.0, 604_800.0) as u64,
            )
        });
        let size = match record.get("size").and_then(Value::as_f64) {
            Some(size) if size >= 0.0 => size as u64,
            _ => store.size(&key).await.map_err(file_error)?,
        };
        Ok(Readable {
            id: id.to_owned(),
            name: text(&record, "name").unwrap_or("file").to_owned(),
            content_type: text(&record, "type")
                .unwrap_or("application/octet-stream")
                .to_owned(),
            size,
            etag: text(&record, "etag").unwrap_or(id).to_owned(),
            uploaded_at_ms: match record.get("uploadedAt") {
                Some(Value::Date(ms)) => Some(*ms),
                _ => None,
            },
            store,
            key,
            redirect_for,
        })
    }

    /// A room's files, newest first (or by name), for a caller who may read the room:
    /// `(files, total)`. `name` matches literally; thumbnails and unconfirmed uploads are
    /// left out.
    pub async fn files_of(
        &self,
        call: &Call<'_>,
        rid: &str,
        filter: FilesFilter,
    ) -> Result<(Vec<Document>, usize), ServiceError> {
        let uid = call.require_user()?;
        let room = self
            .rooms
            .room(rid)
            .await?
            .ok_or_else(crate::chat::not_allowed)?;
        if !self.rooms.can_access(&room, Some(uid)).await? {
            return Err(crate::chat::not_allowed());
        }
        let mut query = serde_json::json!({"rid": rid, "typeGroup": {"$ne": "thumb"}, "expiresAt": {"$exists": false}});
        if let Some(name) = filter.name.filter(|n| !n.is_empty()) {
            query["name"] =
                serde_json::json!({"$regex": crate::chat::literal_pattern(&name), "$options": "i"});
        }
        if let Some(group) = filter.type_group.filter(|g| !g.is_empty()) {
            query["typeGroup"] = serde_json::json!({"$eq": group, "$ne": "thumb"});
        }
        let sort = if filter.by_name {
            serde_json::json!({"name": 1})
        } else {
            serde_json::json!({"uploadedAt": -1})
        };
        let all = self
            .store
            .find(
                UPLOADS,
                FindOptions {
                    selector: selector(query)?,
                    sort: crate::model::query::Sort::parse(&doc(sort)?)
                        .map_err(|e| ServiceError::Internal(e.to_string()))?,
                    ..FindOptions::default()
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        let total = all.len();
        let mut page: Vec<Document> = all
            .into_iter()
            .skip(filter.offset)
            .take(filter.count)
            .collect();
        let mut users: HashMap<String, Option<Value>> = HashMap::new();
        for file in &mut page {
            for hidden in ["AmazonS3", "etag", "preview", "token"] {
                file.shift_remove(hidden);
            }
            let Some(owner) = text(file, "userId").map(str::to_owned) else {
                continue;
            };
            if !users.contains_key(&owner) {
                let found = self.rooms.user(&owner).await?.map(|u| {
                    val(serde_json::json!({
                        "_id": owner, "username": text(&u, "username"), "name": text(&u, "name"),
                    }))
                });
                users.insert(owner.clone(), found);
            }
            if let Some(Some(user)) = users.get(&owner) {
                file.insert("user".into(), user.clone());
            }
        }
        Ok((page, total))
    }

    /// Drops an upload of the caller's whose message could not be sent.
    pub async fn discard(&self, call: &Call<'_>, id: &str) {
        if let Some(uid) = call.user() {
            self.remove_files(Some(call), serde_json::json!({"_id": id, "userId": uid}))
                .await;
            self.remove_files(
                Some(call),
                serde_json::json!({"originalFileId": id, "userId": uid}),
            )
            .await;
        }
    }

    /// Removes the unconfirmed uploads whose time ran out before `now`, and their
    /// thumbnails.
    pub async fn remove_expired(&self, now: f64) {
        let filter = serde_json::json!({"expiresAt": {"$lt": {"$date": now}}});
        let expired: Vec<String> = self
            .records_where(filter)
            .await
            .iter()
            .filter_map(|r| text(r, "_id").map(str::to_owned))
            .collect();
        if expired.is_empty() {
            return;
        }
        tracing::info!(
            count = expired.len(),
            "removing unconfirmed uploads past their time"
        );
        self.remove_files(
            None,
            serde_json::json!({"originalFileId": {"$in": expired.clone()}}),
        )
        .await;
        self.remove_files(None, serde_json::json!({"_id": {"$in": expired}}))
            .await;
    }

    /// The records `filter` selects (none when the store cannot be read: upkeep tries
    /// again later).
    async fn records_where(&self, filter: serde_json::Value) -> Vec<Document> {
        let Ok(sel) = selector(filter) else {
            return Vec::new();
        };
        let options = FindOptions {
            selector: sel,
            ..FindOptions::default()
        };
        match self.store.find(UPLOADS, options).await {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(%err, "uploads' records could not be read");
                Vec::new()
            }
        }
    }

    /// Removes uploads and their bytes.
    async fn remove_files(&self, call: Option<&Call<'_>>, filter: serde_json::Value) {
        let found = self.records_where(filter.clone()).await;
        for record in &found {
            let kind = text(record, "store")
                .and_then(|s| s.split(':').next())
                .and_then(Backend::parse)
                .unwrap_or(Backend::GridFs);
            if let (Ok(store), Some(key)) = (self.backend(kind), Self::key_of(record, kind)) {
                if let Err(err) = store.delete(&key).await {
                    tracing::warn!(%err, "an upload's bytes could not be removed");
                }
            }
        }
        if found.is_empty() {
            return;
        }
        if let Ok(sel) = selector(filter) {
            match self
                .store
                .remove(UPLOADS, sel, RemoveOptions { multi: true })
                .await
            {
                Ok(ack) => {
                    if let Some(call) = call {
                        call.record_write(ack.seq);
                    }
                }
                Err(err) => tracing::warn!(%err, "uploads' records could not be removed"),
            }
        }
    }
}

/// What `*.files` filters by.
#[derive(Clone, Debug, Default)]
pub struct FilesFilter {
    pub name: Option<String>,
    pub type_group: Option<String>,
    pub by_name: bool,
    pub offset: usize,
    pub count: usize,
}

/// A value built here from JSON (never a client's).
fn val(json: serde_json::Value) -> Value {
    Value::from_json(json).unwrap_or(Value::Null)
}

/// A stored value as plain JSON.
fn json_of(value: &Value) -> serde_json::Value {
    serde_json::from_str(&value.to_ejson_string()).unwrap_or(serde_json::Value::Null)
}

fn interrupted(cause: &str) -> ServiceError {
    tracing::debug!(%cause, "an upload broke off");
    client_error(
        "error-upload-interrupted",
        "The upload did not arrive whole",
    )
}

/// `/file-upload/<id>/<name>` with the name escaped as a URL path segment.
pub fn file_path(id: &str, name: &str) -> String {
    format!("/file-upload/{id}/{}", crate::chat::percent_encoded(name))
}

/// A file message's `file`, `files` and `attachments` in Rocket.Chat's shapes.
fn message_parts(file: &Document) -> (Value, Value, Value) {
    let id = text(file, "_id").unwrap_or_default();
    let name = text(file, "name").unwrap_or("file");
    let kind = text(file, "type").unwrap_or("application/octet-stream");
    let size = file.get("size").and_then(Value::as_f64).unwrap_or(0.0);
    let url = file_path(id, name);
    let format = file
        .get("identify")
        .and_then(Value::as_object)
        .and_then(|i| text(i, "format"))
        .unwrap_or_default();
    let entry = |id: &str, name: &str, kind: &str, size: f64, format: &str, group: &str| serde_json::json!({"_id": id, "name": name, "type": kind, "size": size, "format": format, "typeGroup": group});
    let group = sniff::type_group(kind);
    let mut files = vec![entry(id, name, kind, size, format, group)];
    let description = text(file, "description");
    let mut attachment = serde_json::json!({
        "title": name, "type": "file", "title_link": url, "title_link_download": true, "fileId": id,
    });
    if let Some(d) = description {
        attachment["description"] = d.into();
    }
    match group {
        "image" => {
            attachment["image_url"] = url.clone().into();
            attachment["image_type"] = kind.into();
            attachment["image_size"] = size.into();
            if let Some(dims) = file
                .get("identify")
                .and_then(Value::as_object)
                .and_then(|i| i.get("size"))
            {
                attachment["image_dimensions"] = json_of(dims);
            }
            if let Some(preview) = text(file, "preview") {
                attachment["image_preview"] = preview.into();
            }
            if let Some(thumb) = file.get("thumbnail").and_then(Value::as_object) {
                let tid = text(thumb, "_id").unwrap_or_default();
                let tname = text(thumb, "name").unwrap_or("thumb");
                let ttype = text(thumb, "type").unwrap_or("image/jpeg");
                attachment["image_url"] = file_path(tid, name).into();
                attachment["image_type"] = ttype.into();
                attachment["image_dimensions"] = serde_json::json!({
                    "width": thumb.get("width").map(json_of), "height": thumb.get("height").map(json_of),
                });
                let tsize = thumb.get("size").and_then(Value::as_f64).unwrap_or(0.0);
                files.push(entry(
                    tid,
                    tname,
                    ttype,
                    tsize,
                    if ttype == "image/png" { "png" } else { "jpeg" },
                    "thumb",
                ));
            }
        }
        "audio" => {
            attachment["audio_url"] = url.clone().into();
            attachment["audio_type"] = kind.into();
            attachment["audio_size"] = size.into();
        }
        "video" => {
            attachment["video_url"] = url.clone().into();
            attachment["video_type"] = kind.into();
            attachment["video_size"] = size.into();
        }
        _ => {
            attachment["format"] = sniff::extension(name).into();
            attachment["size"] = size.into();
        }
    }
    let files = serde_json::Value::Array(files);
    (
        val(files[0].clone()),
        val(files),
        val(serde_json::json!([attachment])),
    )
}

/// Removes files with what carried them: a deleted message's (unless history is kept) and
/// an erased room's.
struct Cleanup(std::sync::Weak<Uploads>);

impl ChatHooks for Cleanup {
    fn name(&self) -> &str {
        "comet.uploads"
    }

    fn implements(&self, point: Point) -> bool {
        matches!(
            point,
            Point::MessageHasBeenDeleted | Point::RoomHasBeenErased
        )
    }

    fn message_has_been_deleted<'a>(
        &'a self,
        message: &'a Document,
        _by: &'a Document,
    ) -> HookFuture<'a, ()> {
        Box::pin(async move {
            let Some(uploads) = self.0.upgrade() else {
                return;
            };
            if uploads.settings.flag("Message_KeepHistory", false) {
                return;
            }
            let ids: Vec<String> = match message.get("files") {
                Some(Value::Array(files)) => files
                    .iter()
                    .filter_map(|f| {
                        f.as_object()
                            .and_then(|f| text(f, "_id"))
                            .map(str::to_owned)
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let (Some(rid), false) = (text(message, "rid"), ids.is_empty()) else {
                return;
            };
            uploads
                .remove_files(None, serde_json::json!({"_id": {"$in": ids}, "rid": rid}))
                .await;
        })
    }

    fn room_has_been_erased<'a>(
        &'a self,
        room: &'a Document,
        call: &'a Call<'a>,
    ) -> HookFuture<'a, ()> {
        Box::pin(async move {
            let (Some(uploads), Some(rid)) = (self.0.upgrade(), text(room, "_id")) else {
                return;
            };
            uploads
                .remove_files(Some(call), serde_json::json!({"rid": rid}))
                .await;
        })
    }
}
