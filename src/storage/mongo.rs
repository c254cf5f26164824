//! The MongoDB backend: the official driver for reads and writes, and one change source per
//! database for the change feed, either a change stream (the default) or the oplog
//! (`MONGO_OPLOG_URL`).
//!
//! Owns the database handles, the change-feed task and its persisted resume position. The
//! change feed has its own client, so its long polls never queue behind reads and writes. One
//! change stream watches the whole database, filtered to the collections live queries read
//! (it is reopened from its resume token when that set grows), never one stream per cursor.
//! Every source record goes through [`super::normalize`], like the fixtures do; a record it
//! cannot understand, or a resume position the server no longer holds, becomes an
//! `invalidate` event, on which every live query re-reads.
//!
//! Sequence numbers are MongoDB cluster times (see [`timestamp_seq`]): a write's
//! `operationTime` is the sequence number its change event will carry, which is what the
//! write fence waits for.

use super::bson_value::{from_bson, from_bson_document, timestamp_seq, to_bson_document};
use super::normalize::{from_change_stream, from_oplog, settle_transactions, Normalized};
use super::{
    ChangeEvent, FindOptions, OperationType, RemoveOptions, Store, StoreError, StoreFuture,
    UpdateAck, UpdateOptions, WriteAck,
};
use crate::model::query::update::check_field_names;
use crate::model::query::{QueryError, Selector, Sort, Update};
use crate::model::{Document, Value};
use mongodb::bson::{self, doc, Bson};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, CursorType, FullDocumentType};
use mongodb::{Client, ClientSession, Database, IndexModel};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

/// How the MongoDB backend connects and follows changes.
#[derive(Clone, Debug)]
pub struct MongoOptions {
    /// `MONGO_URL`: must name the database (`mongodb://host/<database>`).
    pub url: String,
    /// `MONGO_OPLOG_URL`: tail this `local` database's oplog instead of a change stream.
    pub oplog_url: Option<String>,
    /// Where the resume position is kept between runs.
    pub state_dir: PathBuf,
    /// Read post-images (`fullDocument: whenAvailable`) rather than look documents up.
    pub post_images: bool,
}

/// The MongoDB store.
pub struct MongoStore {
    client: Client,
    db: Database,
    changes: broadcast::Sender<Arc<ChangeEvent>>,
    last_seq: Arc<AtomicU64>,
    followed: watch::Sender<BTreeSet<String>>,
    /// Whether the change feed is following the server now (what `/health` reports).
    following: Arc<std::sync::atomic::AtomicBool>,
    feed: tokio::task::JoinHandle<()>,
}

impl Drop for MongoStore {
    fn drop(&mut self) {
        self.feed.abort();
    }
}

/// Server error codes that mean the resume position is gone: start over and re-read.
const HISTORY_LOST: [i32; 3] = [136, 280, 286];
/// "The $changeStream stage is only supported on replica sets": a standalone server.
const NOT_A_REPLICA_SET: i32 = 40573;
/// Server error codes for a query or update the server refuses.
const BAD_QUERY: [i32; 8] = [2, 9, 14, 40, 52, 55, 56, 66];
/// The longest the server may work on one read (`maxTimeMS`).
const QUERY_MAX_TIME: Duration = Duration::from_secs(10);
/// Connections for reads and writes (the change feed has a client and pool of its own).
const POOL_SIZE: u32 = 32;
/// How long a change stream's `getMore` waits for events before an empty batch.
const CHANGE_STREAM_AWAIT: Duration = Duration::from_millis(200);
/// Write the resume position at most this often.
const PERSIST_EVERY: Duration = Duration::from_secs(1);

fn error_code(err: &mongodb::error::Error) -> Option<i32> {
    match err.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        _ => None,
    }
}

/// The one place driver errors become [`StoreError`]s.
fn store_error(err: mongodb::error::Error) -> StoreError {
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == 11000 => {
            StoreError::DuplicateKey(w.message.clone())
        }
        ErrorKind::Write(WriteFailure::WriteError(w)) if BAD_QUERY.contains(&w.code) => {
            StoreError::InvalidQuery(QueryError::new(w.message.clone()))
        }
        ErrorKind::Write(WriteFailure::WriteError(w)) => {
            StoreError::InvalidDocument(w.message.clone())
        }
        ErrorKind::Command(c) if c.code == 11000 => StoreError::DuplicateKey(c.message.clone()),
        ErrorKind::Command(c) if BAD_QUERY.contains(&c.code) => {
            StoreError::InvalidQuery(QueryError::new(c.message.clone()))
        }
        ErrorKind::Command(c) if c.code == 10334 => StoreError::InvalidDocument(c.message.clone()),
        ErrorKind::InvalidArgument { message, .. } => {
            StoreError::InvalidQuery(QueryError::new(message.clone()))
        }
        _ => StoreError::Unavailable(err.to_string()),
    }
}

fn check_collection(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 120
        && !name.starts_with("system.")
        && !name.contains(['$', '\0']);
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidCollection(name.to_owned()))
    }
}

fn doc_value(doc: Result<Document, String>) -> Result<Document, StoreError> {
    doc.map_err(|e| StoreError::Unavailable(format!("unreadable document from MongoDB: {e}")))
}

impl MongoStore {
    /// Connects (checking the server answers) and starts following changes.
    pub async fn connect(options: MongoOptions) -> Result<Arc<Self>, StoreError> {
        let parse = |url: &str| {
            let url = url.to_owned();
            async move {
                let mut parsed = ClientOptions::parse(&url)
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("bad MongoDB URL: {e}")))?;
                parsed.app_name.get_or_insert_with(|| "comet".into());
                parsed.max_pool_size.get_or_insert(POOL_SIZE);
                parsed
                    .server_selection_timeout
                    .get_or_insert(Duration::from_secs(10));
                // Acknowledged by a majority, so an acknowledged write survives a failover
                // (a `w` in the URL wins).
                parsed
                    .write_concern
                    .get_or_insert_with(mongodb::options::WriteConcern::majority);
                Ok::<_, StoreError>(parsed)
            }
        };
        let client_options = parse(&options.url).await?;
        let db_name = client_options.default_database.clone().ok_or_else(|| {
            StoreError::Unavailable(
                "MONGO_URL names no database (mongodb://host/<database>)".into(),
            )
        })?;
        let client = Client::with_options(client_options.clone()).map_err(store_error)?;
        let db = client.database(&db_name);
        db.run_command(doc! {"ping": 1})
            .await
            .map_err(|e| StoreError::Unavailable(format!("MongoDB does not answer: {e}")))?;
        // Servers from 7.0 and 6.0.9 split change events over 16 MB into fragments
        // (`$changeStreamSplitLargeEvent`); older ones fail on such an event. The patch
        // release is only in `buildInfo`; without it, the wire version tells 7.0 apart.
        let wire_version = db
            .run_command(doc! {"hello": 1})
            .await
            .ok()
            .and_then(|hello| hello.get_i32("maxWireVersion").ok())
            .unwrap_or(0);
        let version = db
            .run_command(doc! {"buildInfo": 1})
            .await
            .ok()
            .and_then(|info| server_version(&info));
        let split_large_events = match version {
            Some(v) => splits_large_events(v),
            None => wire_version >= 21,
        };
        tracing::info!(database = %db_name, oplog = options.oplog_url.is_some(), wire_version, version = ?version, split_large_events, "connected to MongoDB");

        let (changes, _) = broadcast::channel(16 * 1024);
        let last_seq = Arc::new(AtomicU64::new(0));
        let (followed, followed_rx) = watch::channel(BTreeSet::new());
        let following = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let feed = Feed {
            changes: changes.clone(),
            last_seq: last_seq.clone(),
            following: following.clone(),
            followed: followed_rx,
            position_file: options
                .state_dir
                .join(format!("mongo-{db_name}.resume.json")),
            last_persist: Instant::now(),
            db_name: db_name.clone(),
        };
        std::fs::create_dir_all(&options.state_dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create {}: {e}",
                options.state_dir.display()
            ))
        })?;
        let task = match &options.oplog_url {
            Some(url) => {
                let oplog_client = Client::with_options(parse(url).await?).map_err(store_error)?;
                tokio::spawn(feed.tail_oplog(oplog_client, db.clone()))
            }
            None => {
                // Its own pool: the stream's long polls never wait behind reads and writes.
                let feed_client = Client::with_options(client_options).map_err(store_error)?;
                let full_document = if options.post_images {
                    FullDocumentType::WhenAvailable
                } else {
                    FullDocumentType::UpdateLookup
                };
                tokio::spawn(feed.follow_change_stream(
                    feed_client.database(&db_name),
                    full_document,
                    split_large_events,
                ))
            }
        };
        Ok(Arc::new(Self {
            client,
            db,
            changes,
            last_seq,
            followed,
            following,
            feed: task,
        }))
    }

    fn collection(&self, name: &str) -> Result<mongodb::Collection<bson::Document>, StoreError> {
        check_collection(name)?;
        Ok(self.db.collection(name))
    }

    async fn session(&self) -> Result<ClientSession, StoreError> {
        self.client.start_session().await.map_err(store_error)
    }

    /// What a write's fence waits for: its operation time, when live queries read the
    /// collection (otherwise no change event will come for it, and nothing needs it).
    fn fence(&self, collection: &str, session: &ClientSession, changed: bool) -> u64 {
        if !changed || !self.followed.borrow().contains(collection) {
            return 0;
        }
        session.operation_time().map(timestamp_seq).unwrap_or(0)
    }

    async fn insert_inner(
        &self,
        collection: String,
        mut doc: Document,
    ) -> Result<WriteAck, StoreError> {
        let coll = self.collection(&collection)?;
        check_field_names(&doc, true).map_err(|e| StoreError::InvalidDocument(e.0))?;
        let id = super::ensure_id(&mut doc);
        let mut session = self.session().await?;
        coll.insert_one(to_bson_document(&doc))
            .session(&mut session)
            .await
            .map_err(store_error)?;
        let seq = self.fence(&collection, &session, true);
        Ok(WriteAck { id, seq })
    }

    async fn update_inner(
        &self,
        collection: String,
        selector: Selector,
        update: Update,
        UpdateOptions { multi, upsert }: UpdateOptions,
    ) -> Result<UpdateAck, StoreError> {
        let coll = self.collection(&collection)?;
        let filter = to_bson_document(selector.source());
        let mut spec = update.to_document();
        if upsert && !update.is_replacement() && !selector.source().contains_key("_id") {
            // As Meteor does: an upserted document gets a string id, not an ObjectId.
            let on_insert = spec
                .entry("$setOnInsert".to_owned())
                .or_insert_with(|| Value::Object(Document::default()));
            if let Value::Object(fields) = on_insert {
                fields
                    .entry("_id".to_owned())
                    .or_insert_with(|| Value::String(crate::model::random::random_id()));
            }
        }
        let spec = to_bson_document(&spec);
        let mut session = self.session().await?;
        let result = if update.is_replacement() {
            coll.replace_one(filter, spec)
                .upsert(upsert)
                .session(&mut session)
                .await
        } else if multi {
            coll.update_many(filter, spec)
                .upsert(upsert)
                .session(&mut session)
                .await
        } else {
            coll.update_one(filter, spec)
                .upsert(upsert)
                .session(&mut session)
                .await
        }
        .map_err(store_error)?;
        let upserted_id = match result.upserted_id {
            Some(id) => Some(from_bson(id).map_err(StoreError::Unavailable)?),
            None => None,
        };
        let changed = result.modified_count > 0 || upserted_id.is_some();
        Ok(UpdateAck {
            matched: result.matched_count,
            modified: result.modified_count,
            upserted_id,
            seq: self.fence(&collection, &session, changed),
        })
    }

    async fn remove_inner(
        &self,
        collection: String,
        selector: Selector,
        RemoveOptions { multi }: RemoveOptions,
    ) -> Result<UpdateAck, StoreError> {
        let coll = self.collection(&collection)?;
        let filter = to_bson_document(selector.source());
        let mut session = self.session().await?;
        let result = if multi {
            coll.delete_many(filter).session(&mut session).await
        } else {
            coll.delete_one(filter).session(&mut session).await
        }
        .map_err(store_error)?;
        Ok(UpdateAck {
            matched: result.deleted_count,
            modified: result.deleted_count,
            upserted_id: None,
            seq: self.fence(&collection, &session, result.deleted_count > 0),
        })
    }

    async fn find_inner(
        &self,
        collection: String,
        options: FindOptions,
    ) -> Result<Vec<Document>, StoreError> {
        let coll = self.collection(&collection)?;
        if options.limit == Some(0) {
            // MongoDB reads a limit of 0 as "no limit"; a cursor's limit 0 means nothing.
            return Ok(Vec::new());
        }
        let mut sort = options.sort.to_document();
        // Ties broken by `_id`, as the embedded store does, so windows are stable.
        sort.entry("_id".to_owned()).or_insert(Value::Number(1.0));
        let mut find = coll
            .find(to_bson_document(options.selector.source()))
            .sort(to_bson_document(&sort))
            .skip(options.skip as u64)
            // Live queries read under a lock the change feed also needs: a read the server
            // cannot finish in time fails rather than holding every other query.
            .max_time(QUERY_MAX_TIME);
        if let Some(limit) = options.limit {
            find = find.limit(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        if !options.projection.is_all() {
            find = find.projection(to_bson_document(&options.projection.to_document()));
        }
        let mut cursor = find.await.map_err(store_error)?;
        let mut out = Vec::new();
        while cursor.advance().await.map_err(store_error)? {
            let raw = cursor.deserialize_current().map_err(store_error)?;
            out.push(doc_value(from_bson_document(raw))?);
        }
        Ok(out)
    }
}

impl Store for MongoStore {
    fn mongo_database(&self) -> Option<mongodb::Database> {
        Some(self.db.clone())
    }

    fn kind(&self) -> &'static str {
        "mongo"
    }

    fn insert(&self, collection: &str, doc: Document) -> StoreFuture<'_, WriteAck> {
        Box::pin(self.insert_inner(collection.to_owned(), doc))
    }

    fn update(
        &self,
        collection: &str,
        selector: Selector,
        update: Update,
        options: UpdateOptions,
    ) -> StoreFuture<'_, UpdateAck> {
        Box::pin(self.update_inner(collection.to_owned(), selector, update, options))
    }

    fn remove(
        &self,
        collection: &str,
        selector: Selector,
        options: RemoveOptions,
    ) -> StoreFuture<'_, UpdateAck> {
        Box::pin(self.remove_inner(collection.to_owned(), selector, options))
    }

    fn find(&self, collection: &str, options: FindOptions) -> StoreFuture<'_, Vec<Document>> {
        Box::pin(self.find_inner(collection.to_owned(), options))
    }

    fn ensure_index(&self, collection: &str, keys: Sort) -> StoreFuture<'_, ()> {
        let collection = collection.to_owned();
        Box::pin(async move {
            let model = IndexModel::builder()
                .keys(to_bson_document(&keys.to_document()))
                .build();
            self.collection(&collection)?
                .create_index(model)
                .await
                .map_err(store_error)?;
            Ok(())
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeEvent>> {
        self.changes.subscribe()
    }

    fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    fn follow_collection(&self, collection: &str) {
        self.followed
            .send_if_modified(|set| set.insert(collection.to_owned()));
    }

    fn is_following(&self) -> bool {
        self.following.load(Ordering::Acquire)
    }

    fn events_share_positions(&self) -> bool {
        true
    }
}

/// The change-feed task's state.
struct Feed {
    changes: broadcast::Sender<Arc<ChangeEvent>>,
    last_seq: Arc<AtomicU64>,
    following: Arc<std::sync::atomic::AtomicBool>,
    followed: watch::Receiver<BTreeSet<String>>,
    position_file: PathBuf,
    last_persist: Instant,
    db_name: String,
}

impl Feed {
    /// Delivers normalized events under sequence number `seq`.
    fn publish(&self, normalized: Normalized, seq: u64) {
        let events = match normalized {
            Normalized::Events(events) => events,
            Normalized::Nothing => Vec::new(),
            Normalized::Resync(why) => {
                tracing::warn!(cause = %why, "change not understood: live queries re-read");
                vec![invalidate()]
            }
            // Change streams report committed writes only; the oplog tailer settles
            // transactions before publishing.
            Normalized::Commit { events, .. } => events,
            Normalized::Pending { .. } | Normalized::Abort { .. } => Vec::new(),
        };
        let seq = self.last_seq.load(Ordering::Acquire).max(seq);
        for mut event in events {
            event.seq = seq;
            let _ = self.changes.send(Arc::new(event));
        }
        self.last_seq.store(seq, Ordering::Release);
    }

    /// Tells live queries the source has seen the database up to `seq`, included.
    fn progress(&self, seq: u64) {
        if seq < self.last_seq.load(Ordering::Acquire) || seq == 0 {
            return;
        }
        let mut event =
            ChangeEvent::for_document(seq, OperationType::Progress, "".into(), None, None, None);
        event.seq = seq;
        let _ = self.changes.send(Arc::new(event));
        self.last_seq.store(seq, Ordering::Release);
    }

    fn resync(&self, why: &str) {
        self.resync_at(why, None);
    }

    /// Live queries re-read everything; `at`, when known, is where the source now stands, so
    /// that fences of writes up to there (which the re-read covers) are released.
    fn resync_at(&self, why: &str, at: Option<u64>) {
        tracing::warn!(cause = why, "change feed restarts: live queries re-read");
        let seq = self.last_seq.load(Ordering::Acquire).max(at.unwrap_or(0));
        let mut event = invalidate();
        event.seq = seq;
        let _ = self.changes.send(Arc::new(event));
        self.last_seq.store(seq, Ordering::Release);
    }

    fn set_following(&self, following: bool) {
        if self.following.swap(following, Ordering::AcqRel) != following {
            if following {
                tracing::info!("change feed following again");
            } else {
                tracing::warn!("change feed not following: /health answers 503 until it is");
            }
        }
    }

    fn load_position(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(&self.position_file).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Persists the resume position (at most once a second unless `now`).
    fn persist_position(&mut self, position: &serde_json::Value, now: bool) {
        if !now && self.last_persist.elapsed() < PERSIST_EVERY {
            return;
        }
        self.last_persist = Instant::now();
        let tmp = self.position_file.with_extension("tmp");
        let written = std::fs::write(&tmp, position.to_string())
            .and_then(|()| std::fs::rename(&tmp, &self.position_file));
        if let Err(err) = written {
            tracing::warn!(cause = %err, file = %self.position_file.display(), "cannot persist the change feed's resume position");
        }
    }

    async fn follow_change_stream(
        mut self,
        db: Database,
        full_document: FullDocumentType,
        split_large_events: bool,
    ) {
        type Token = mongodb::change_stream::event::ResumeToken;
        // Not the saved position: after a start every live query reads fresh, and events
        // replayed from an old token would be applied to newer results. The stream starts
        // now; the saved token only tells the log how long comet was away.
        if let Some(saved) = self.load_position() {
            tracing::info!(saved = %saved, "change stream starts now, not at the saved position: live queries read fresh");
        }
        let mut token: Option<Token> = None;
        // After an invalidate: the next stream starts after its token.
        let mut start_after: Option<Token> = None;
        // Why live queries must re-read once the next stream is open (never before: a write
        // between the re-read and the new stream would be lost).
        let mut resync_when_open: Option<&'static str> = None;
        // Errors in a row on the same position, and the wait before the next attempt; reset
        // only once a batch was read, so a stream that opens and fails at once backs off.
        let mut failures = 0u32;
        let mut backoff = Duration::from_millis(100);
        loop {
            let collections: Vec<String> =
                self.followed.borrow_and_update().iter().cloned().collect();
            let mut pipeline = vec![doc! {"$match": {"$or": [
                {"ns.coll": {"$in": collections.clone()}},
                // A rename into a followed collection replaces what it holds.
                {"to.coll": {"$in": collections}},
                {"operationType": {"$in": ["dropDatabase", "invalidate"]}},
            ]}}];
            if split_large_events {
                pipeline.push(doc! {"$changeStreamSplitLargeEvent": {}});
            }
            // Fragments of a split event, joined until the last arrives.
            let mut fragments: Option<bson::Document> = None;
            // Short polls: an empty batch is what says a cluster time is complete (a
            // transaction's events share one), so it must come soon after the last event.
            let watch = db
                .watch()
                .pipeline(pipeline)
                .full_document(full_document.clone())
                .max_await_time(CHANGE_STREAM_AWAIT);
            let opened = match start_after.clone() {
                Some(after) => watch.start_after(after).await,
                None => watch.resume_after(token.clone()).await,
            };
            let mut stream = match opened {
                Ok(stream) => stream.with_type::<bson::Document>(),
                Err(err) if error_code(&err).is_some_and(|c| HISTORY_LOST.contains(&c)) => {
                    token = None;
                    start_after = None;
                    resync_when_open = Some("the resume token is no longer in the oplog");
                    continue;
                }
                Err(err) => {
                    self.set_following(false);
                    let backoff_ms = backoff.as_millis() as u64;
                    if error_code(&err) == Some(NOT_A_REPLICA_SET) {
                        tracing::error!(cause = %err, backoff_ms, "MongoDB refuses change streams: it is not a replica set (start it with --replSet and rs.initiate(), or follow the oplog with MONGO_OPLOG_URL); retrying");
                    } else {
                        tracing::error!(cause = %err, backoff_ms, "cannot open the change stream; retrying");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            start_after = None;
            // The first poll only hands over the opening batch; the stream has proved itself
            // once a `getMore` came back.
            let mut polls = 0u32;
            if let Some(why) = resync_when_open.take() {
                // The stream is open: a re-read now misses nothing, and covers every write
                // up to where the stream starts.
                let at = stream.resume_token().as_ref().and_then(token_cluster_time);
                self.resync_at(why, at);
            }
            loop {
                if self.followed.has_changed().unwrap_or(false) {
                    // A new collection to watch: reopen from where this stream is.
                    break;
                }
                let polled = stream.next_if_any().await;
                polls += 1;
                if polled.is_ok() && polls > 1 {
                    failures = 0;
                    backoff = Duration::from_millis(100);
                    self.set_following(true);
                }
                match polled {
                    Ok(Some(raw)) => {
                        let Some(raw) = join_fragments(&mut fragments, raw) else {
                            continue;
                        };
                        let seq = raw
                            .get_timestamp("clusterTime")
                            .map(timestamp_seq)
                            .unwrap_or(0);
                        if raw
                            .get_str("operationType")
                            .is_ok_and(|op| op == "invalidate")
                        {
                            // A stream cannot resume after its invalidate, but the next may
                            // start after it; live queries re-read once it is open.
                            start_after = raw
                                .get("_id")
                                .and_then(|t| bson::from_bson::<Token>(t.clone()).ok());
                            token = None;
                            resync_when_open = Some("the change stream was invalidated");
                            break;
                        }
                        let json = Bson::Document(raw).into_canonical_extjson();
                        self.publish(from_change_stream(&json), seq);
                    }
                    Ok(None) => {
                        // An empty batch: the stream has seen the database up to its
                        // post-batch token, whether or not a change was for us.
                        if let Some(at) =
                            stream.resume_token().as_ref().and_then(token_cluster_time)
                        {
                            self.progress(at);
                        }
                    }
                    Err(err) => {
                        self.set_following(false);
                        failures += 1;
                        if error_code(&err).is_some_and(|c| HISTORY_LOST.contains(&c)) {
                            token = None;
                            resync_when_open = Some("the change stream lost its history");
                        } else if failures >= 3 {
                            // The same position fails again and again (an event too large to
                            // read, say): start from now and re-read instead.
                            tracing::error!(cause = %err, failures, "change stream keeps failing at one position; restarting past it");
                            token = None;
                            resync_when_open =
                                Some("the change stream could not get past an event");
                            failures = 0;
                        } else {
                            tracing::warn!(cause = %err, backoff_ms = backoff.as_millis() as u64, "change stream failed; reopening");
                            token = stream.resume_token().or(token);
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        break;
                    }
                }
                token = stream.resume_token().or(token);
                if let Some(t) = &token {
                    if let Ok(json) = serde_json::to_value(t) {
                        self.persist_position(&serde_json::json!({"token": json}), false);
                    }
                }
            }
        }
    }

    async fn tail_oplog(mut self, oplog_client: Client, db: Database) {
        let oplog = oplog_client
            .database("local")
            .collection::<bson::Document>("oplog.rs");
        let mut last: Option<bson::Timestamp> = self.load_position().and_then(|p| {
            Some(bson::Timestamp {
                time: u32::try_from(p.get("t")?.as_u64()?).ok()?,
                increment: u32::try_from(p.get("i")?.as_u64()?).ok()?,
            })
        });
        let mut backoff = Duration::from_millis(100);
        // Writes of transactions not committed yet, by transaction.
        let mut transactions = std::collections::HashMap::new();
        loop {
            let start = match last {
                Some(ts) => match oldest_entry(&oplog).await {
                    Ok(Some(oldest)) if timestamp_seq(oldest) > timestamp_seq(ts) => {
                        self.resync("the oplog no longer holds the saved position");
                        newest_entry(&oplog).await.ok().flatten()
                    }
                    _ => Some(ts),
                },
                None => newest_entry(&oplog).await.ok().flatten(),
            };
            let namespaces = format!("^{}\\.", regex::escape(&self.db_name));
            let mut filter = doc! {"$or": [{"ns": {"$regex": namespaces}}, {"ns": "admin.$cmd"}]};
            if let Some(ts) = start {
                filter.insert("ts", doc! {"$gt": ts});
            }
            let cursor = oplog
                .find(filter)
                .cursor_type(CursorType::TailableAwait)
                .no_cursor_timeout(true)
                .await;
            let mut cursor = match cursor {
                Ok(c) => c,
                Err(err) => {
                    self.set_following(false);
                    tracing::error!(cause = %err, "cannot tail the oplog; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            self.set_following(true);
            last = start;
            loop {
                match cursor.advance().await {
                    Ok(true) => backoff = Duration::from_millis(100),
                    Ok(false) => break,
                    Err(err) => {
                        self.set_following(false);
                        tracing::warn!(cause = %err, backoff_ms = backoff.as_millis() as u64, "oplog tailing failed; restarting");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        break;
                    }
                }
                let entry = match cursor.deserialize_current() {
                    Ok(entry) => entry,
                    Err(err) => {
                        self.resync(&format!("unreadable oplog entry: {err}"));
                        continue;
                    }
                };
                let Ok(ts) = entry.get_timestamp("ts") else {
                    continue;
                };
                let json = Bson::Document(entry).into_canonical_extjson();
                let mut normalized =
                    settle_transactions(&mut transactions, from_oplog(&json, &self.db_name));
                if let Normalized::Events(events) = &mut normalized {
                    let followed = self.followed.borrow().clone();
                    events.retain(|e| e.collection.is_empty() || followed.contains(&*e.collection));
                    for event in events.iter_mut() {
                        look_up_update(&db, event).await;
                    }
                }
                self.publish(normalized, timestamp_seq(ts));
                // One oplog entry holds every write at its time: the time is complete.
                self.progress(timestamp_seq(ts));
                last = Some(ts);
                self.persist_position(&serde_json::json!({"t": ts.time, "i": ts.increment}), false);
            }
        }
    }
}

/// Joins the fragments of a split change event (`splitEvent: {fragment, of}`, each holding
/// some of the event's top-level fields): `None` until the last, then the whole event. An
/// event that was not split passes through.
fn join_fragments(
    pending: &mut Option<bson::Document>,
    raw: bson::Document,
) -> Option<bson::Document> {
    let Ok(split) = raw.get_document("splitEvent") else {
        return Some(raw);
    };
    let number = |k: &str| {
        split
            .get_i32(k)
            .map(i64::from)
            .or_else(|_| split.get_i64(k))
            .unwrap_or(0)
    };
    let (fragment, of) = (number("fragment"), number("of"));
    let whole = pending.get_or_insert_with(bson::Document::new);
    for (k, v) in raw {
        if k != "splitEvent" {
            whole.insert(k, v);
        }
    }
    if fragment >= of {
        pending.take()
    } else {
        None
    }
}

/// The cluster time a change stream's resume token stands for: its `_data` starts with the
/// key-string type byte of a timestamp (130) and the timestamp's 8 bytes, big-endian.
fn token_cluster_time(token: &mongodb::change_stream::event::ResumeToken) -> Option<u64> {
    let json = serde_json::to_value(token).ok()?;
    let data = json.get("_data")?.as_str()?;
    if data.len() < 18 || !data.starts_with("82") {
        return None;
    }
    u64::from_str_radix(&data[2..18], 16).ok()
}

fn invalidate() -> ChangeEvent {
    ChangeEvent::for_document(0, OperationType::Invalidate, "".into(), None, None, None)
}

async fn oldest_entry(
    oplog: &mongodb::Collection<bson::Document>,
) -> Result<Option<bson::Timestamp>, mongodb::error::Error> {
    entry_at(oplog, 1).await
}

async fn newest_entry(
    oplog: &mongodb::Collection<bson::Document>,
) -> Result<Option<bson::Timestamp>, mongodb::error::Error> {
    entry_at(oplog, -1).await
}

async fn entry_at(
    oplog: &mongodb::Collection<bson::Document>,
    direction: i32,
) -> Result<Option<bson::Timestamp>, mongodb::error::Error> {
    let entry = oplog
        .find_one(doc! {})
        .sort(doc! {"$natural": direction})
        .await?;
    Ok(entry.and_then(|e| e.get_timestamp("ts").ok()))
}

/// An oplog update names its document but does not carry it: read the current version, as
/// a change stream's `updateLookup` would. A document gone by then stays without one, and
/// observers re-read.
async fn look_up_update(db: &Database, event: &mut ChangeEvent) {
    if event.operation != OperationType::Update || event.full_document.is_some() {
        return;
    }
    let Some(id) = &event.id else { return };
    let coll = db.collection::<bson::Document>(&event.collection);
    let found = coll
        .find_one(doc! {"_id": super::bson_value::to_bson(id)})
        .await;
    match found {
        Ok(Some(raw)) => {
            if let Ok(doc) = from_bson_document(raw) {
                event.full_document = Some(Arc::new(doc));
            }
        }
        Ok(None) => {}
        Err(err) => tracing::warn!(cause = %err, "lookup of an updated document failed"),
    }
}

/// The server's release as (major, minor, patch), from `buildInfo`'s `versionArray`.
fn server_version(info: &bson::Document) -> Option<(i32, i32, i32)> {
    let parts = info.get_array("versionArray").ok()?;
    let part = |i: usize| match parts.get(i) {
        Some(Bson::Int32(n)) => Some(*n),
        Some(Bson::Int64(n)) => i32::try_from(*n).ok(),
        Some(Bson::Double(n)) => Some(*n as i32),
        _ => None,
    };
    Some((part(0)?, part(1)?, part(2).unwrap_or(0)))
}

/// Whether a server of this release accepts `$changeStreamSplitLargeEvent`: 7.0 and later,
/// and the 6.0 line from 6.0.9 (the rapid releases 6.1–6.3 do not have it).
fn splits_large_events((major, minor, patch): (i32, i32, i32)) -> bool {
    major >= 7 || (major == 6 && minor == 0 && patch >= 9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_events_are_split_from_seven_and_from_six_point_zero_point_nine() {
        let version = |major: i32, minor: i32, patch: i32| {
            server_version(&doc! {"versionArray": [major, minor, patch, 0]})
        };
        assert_eq!(version(6, 0, 9), Some((6, 0, 9)));
        assert!(splits_large_events((6, 0, 9)));
        assert!(splits_large_events((7, 0, 0)));
        assert!(splits_large_events((8, 0, 4)));
        assert!(!splits_large_events((6, 0, 8)));
        assert!(!splits_large_events((6, 3, 1)));
        assert!(!splits_large_events((5, 0, 30)));
        assert_eq!(server_version(&doc! {"version": "7.0.2"}), None);
    }

    #[test]
    fn split_events_are_joined_from_their_fragments() {
        let mut pending = None;
        let first = doc! {"_id": {"_data": "82"}, "splitEvent": {"fragment": 1, "of": 2},
        "operationType": "insert", "documentKey": {"_id": "a"}};
        let second = doc! {"_id": {"_data": "83"}, "splitEvent": {"fragment": 2, "of": 2},
        "fullDocument": {"_id": "a", "big": "x"}};
        assert!(join_fragments(&mut pending, first).is_none());
        let whole = join_fragments(&mut pending, second).expect("the last fragment completes it");
        assert_eq!(whole.get_str("operationType").ok(), Some("insert"));
        assert!(whole.get_document("fullDocument").is_ok() && !whole.contains_key("splitEvent"));
        assert_eq!(
            whole
                .get_document("_id")
                .ok()
                .and_then(|t| t.get_str("_data").ok()),
            Some("83")
        );
        let plain = doc! {"operationType": "delete"};
        assert_eq!(join_fragments(&mut None, plain.clone()), Some(plain));
    }

    #[test]
    fn a_resume_token_gives_its_cluster_time() {
        let token: mongodb::change_stream::event::ResumeToken = serde_json::from_value(
            serde_json::json!({"_data": "826553F1000000000A2B022C0100296E5A1004"}),
        )
        .expect("a token");
        assert_eq!(
            token_cluster_time(&token),
            Some((0x6553_F100u64 << 32) | 0x0A)
        );
        let odd: mongodb::change_stream::event::ResumeToken =
            serde_json::from_value(serde_json::json!({"_data": "00"})).expect("a token");
        assert_eq!(token_cluster_time(&odd), None);
    }

    #[test]
    fn collection_names_mongodb_refuses_are_errors() {
        for bad in ["", "a$b", "system.users", "nul\0"] {
            assert!(
                matches!(check_collection(bad), Err(StoreError::InvalidCollection(_))),
                "{bad:?}"
            );
        }
        assert!(check_collection("rocketchat_message").is_ok());
    }

    /// The error `connect` gives for `url` (none: empty).
    async fn connect_error(url: &str) -> String {
        MongoStore::connect(MongoOptions {
            url: url.into(),
            oplog_url: None,
            state_dir: std::env::temp_dir(),
            post_images: false,
        })
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
    }

    /// A feed task's state with no task, writing its position to `position_file`.
    fn feed(
        position_file: PathBuf,
        last_seq: u64,
    ) -> (Feed, broadcast::Receiver<Arc<ChangeEvent>>) {
        let (changes, rx) = broadcast::channel(4);
        let (_tx, followed) = watch::channel(BTreeSet::new());
        let feed = Feed {
            changes,
            last_seq: Arc::new(AtomicU64::new(last_seq)),
            following: Arc::default(),
            followed,
            position_file,
            last_persist: Instant::now(),
            db_name: "db".into(),
        };
        (feed, rx)
    }

    #[tokio::test]
    async fn a_url_without_a_database_is_refused_before_connecting() {
        let err = connect_error("mongodb://127.0.0.1:1/").await;
        assert!(err.contains("names no database"), "{err}");
    }

    #[tokio::test]
    async fn an_unparsable_url_is_a_clear_error() {
        let err = connect_error("postgres://nope").await;
        assert!(err.contains("bad MongoDB URL"), "{err}");
    }

    #[test]
    fn persisted_positions_round_trip() {
        let dir = std::env::temp_dir().join(format!(
            "comet-mongo-pos-{}",
            crate::model::random::random_id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (mut feed, _rx) = feed(dir.join("p.json"), 0);
        assert!(feed.load_position().is_none());
        let position = serde_json::json!({"t": 5, "i": 2});
        feed.persist_position(&position, true);
        assert_eq!(feed.load_position(), Some(position));
    }

    #[test]
    fn unreadable_records_become_invalidate_events() {
        let (feed, mut rx) = feed(std::env::temp_dir().join("unused.json"), 7);
        feed.publish(
            from_change_stream(&serde_json::json!({"operationType": "shardCollection"})),
            9,
        );
        let event = rx.try_recv().unwrap();
        assert_eq!(event.operation, OperationType::Invalidate);
        assert_eq!(event.seq, 9);
        // Sequence numbers never go backwards.
        feed.publish(Normalized::Events(vec![invalidate()]), 3);
        assert_eq!(rx.try_recv().unwrap().seq, 9);
    }
}
