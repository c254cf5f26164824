//! The embedded store: SQLite on disk (WAL, one writer, four reader threads with a
//! connection each), a table per collection holding EJSON text, and a change log written in
//! the same transaction as each change, so that an acknowledged write is never lost and its
//! sequence number is a resume token that survives restarts.

use super::index_key::{self, FieldKey};
use super::{
    ChangeEvent, FindOptions, OperationType, RemoveOptions, Store, StoreError, StoreFuture,
    UpdateAck, UpdateDescription, UpdateOptions, WriteAck, WriteOp, WriteOutcome,
};
use crate::model::query::matcher::IndexBound;
use crate::model::query::update::check_field_names;
use crate::model::query::{compare::compare, Selector, Sort, Update};
use crate::model::{id_to_wire, Document, Value};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::broadcast;

/// MongoDB's largest document.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;
/// Changes kept in the log (older ones are trimmed, like a capped oplog).
pub const DEFAULT_LOG_CAP: u64 = 100_000;

struct Writer {
    conn: Connection,
    next_seq: u64,
    log_cap: u64,
    /// SQLite's `data_version` as this connection last saw it: it moves when another
    /// connection (another process on the same file) commits.
    data_version: i64,
    docs: DocCache,
    /// Tables this connection has made sure of in a transaction that committed or is
    /// open: a rolled-back one may have taken its `CREATE TABLE` along, so this empties
    /// with `docs`.
    tables: std::collections::HashSet<String>,
}

/// Most documents the writer keeps parsed.
const DOC_CACHE_MAX: usize = 4096;

/// Documents the writer read by `_id` lately, parsed, by table and wire id, so that a
/// document updated again and again by `_id` (a room's, at every message) is not parsed
/// from its text each time. Updates refresh what is kept; it is emptied whenever it might
/// be wrong: a write rolled back, a commit that failed, another process's commit.
#[derive(Default)]
struct DocCache(HashMap<String, Document>);

impl DocCache {
    fn key(table: &str, wire_id: &str) -> String {
        format!("{table}\u{0}{wire_id}")
    }

    fn get(&self, table: &str, wire_id: &str) -> Option<&Document> {
        self.0.get(&Self::key(table, wire_id))
    }

    fn put(&mut self, table: &str, wire_id: &str, doc: Document) {
        if self.0.len() >= DOC_CACHE_MAX {
            self.0.clear();
        }
        self.0.insert(Self::key(table, wire_id), doc);
    }

    /// Replaces the document kept for `wire_id`, if one is.
    fn refresh(&mut self, table: &str, wire_id: &str, doc: &Document) {
        if let Some(kept) = self.0.get_mut(&Self::key(table, wire_id)) {
            kept.clone_from(doc);
        }
    }

    fn remove(&mut self, table: &str, wire_id: &str) {
        self.0.remove(&Self::key(table, wire_id));
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

impl Writer {
    /// Creates `table` unless this connection knows it is there: the statement's parse
    /// showed in profiles of the message path, which writes four tables a message.
    fn ensure_table(&mut self, table: &str) -> Result<(), StoreError> {
        if !self.tables.contains(table) {
            ensure_table(&self.conn, table)?;
            self.tables.insert(table.to_owned());
        }
        Ok(())
    }

    /// The changes other processes committed to the file since this one last looked, in
    /// order; `next_seq` moves past them. Call with the writer lock held (and, before a
    /// write of our own, inside its transaction, so nothing commits in between).
    fn catch_up(&mut self) -> Result<Vec<ChangeEvent>, StoreError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if version == self.data_version {
            return Ok(Vec::new());
        }
        self.data_version = version;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, event FROM changelog WHERE seq >= ?1 ORDER BY seq")?;
        let rows = stmt.query_map(params![self.next_seq as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, text) = row?;
            out.push(event_from_text(seq as u64, &text)?);
        }
        drop(stmt);
        if let Some(last) = out.last() {
            self.next_seq = last.seq + 1;
        }
        // Another process wrote: what this one kept parsed may be stale.
        self.docs.clear();
        Ok(out)
    }
}

/// The embedded store.
pub struct EmbeddedStore {
    /// Itself, for the [`Store`] methods that must move an owned handle into a blocking task.
    me: Weak<Self>,
    dir: PathBuf,
    writer: Mutex<Writer>,
    /// Writes queued for the writer thread, which commits what has queued up together.
    writes: tokio::sync::mpsc::Sender<Box<dyn WriteJob>>,
    /// Reads queued for the reader threads, each with a connection of its own.
    reads: tokio::sync::mpsc::Sender<ReadJob>,
    changes: broadcast::Sender<Arc<ChangeEvent>>,
    /// Indexed fields per collection. Changed only under the writer lock, before the change
    /// commits, so a reader that sees a different list after its query re-runs it.
    indexed: IndexedFields,
}

/// A field with a key column (`"k:<path>"`) in its collection's table.
#[derive(Clone, Debug, PartialEq, Eq)]
struct IndexedField {
    path: String,
    column: String,
    /// Some document holds an array or a document there: the column cannot serve queries.
    complex: bool,
}

type IndexedFields = Arc<Mutex<HashMap<String, Arc<Vec<IndexedField>>>>>;

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn key_column(path: &str) -> String {
    quote_ident(&format!("k:{path}"))
}

fn fields_of(indexed: &IndexedFields, collection: &str) -> Arc<Vec<IndexedField>> {
    indexed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(collection)
        .cloned()
        .unwrap_or_default()
}

fn table(collection: &str) -> Result<String, StoreError> {
    if !super::valid_collection_name(collection) {
        return Err(StoreError::InvalidCollection(collection.to_owned()));
    }
    Ok(format!("\"col.{collection}\""))
}

/// A read run on a reader thread with that thread's connection.
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// Reader threads, each with its own connection.
const READERS: usize = 4;

/// Writes waiting for the writer thread; a caller beyond that waits to queue.
const WRITE_QUEUE: usize = 4096;
/// Most writes committed in one transaction.
const MAX_BATCH: usize = 256;

/// A write waiting for the writer thread.
trait WriteJob: Send {
    /// Makes the change inside the open transaction; its change events, numbered from the
    /// writer's `next_seq`.
    fn run(&mut self, w: &mut Writer) -> Result<Vec<ChangeEvent>, StoreError>;
    /// Answers the caller: after the commit, or with why the write did not happen.
    fn finish(self: Box<Self>, outcome: Result<(), StoreError>);
}

struct Job<T, F> {
    run: Option<F>,
    value: Option<T>,
    reply: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&mut Writer) -> Result<(T, Vec<ChangeEvent>), StoreError> + Send,
{
    fn run(&mut self, w: &mut Writer) -> Result<Vec<ChangeEvent>, StoreError> {
        let run = self
            .run
            .take()
            .ok_or_else(|| StoreError::Unavailable("a write ran twice".into()))?;
        let (value, events) = run(w)?;
        self.value = Some(value);
        Ok(events)
    }

    fn finish(self: Box<Self>, outcome: Result<(), StoreError>) {
        let Job { value, reply, .. } = *self;
        let answer = outcome.and_then(|()| {
            value.ok_or_else(|| StoreError::Unavailable("a write never ran".into()))
        });
        // A caller that stopped waiting is fine: the write stands.
        let _ = reply.send(answer);
    }
}

/// Starts the writer thread: it takes the first queued write and every one queued behind
/// it (up to [`MAX_BATCH`]) and commits them together, so that one commit (and one `fsync`)
/// serves every write that arrived while the previous commit ran.
fn start_writer(
    store: Weak<EmbeddedStore>,
    mut jobs: tokio::sync::mpsc::Receiver<Box<dyn WriteJob>>,
) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name("comet-store-write".into())
        .spawn(move || {
            while let Some(first) = jobs.blocking_recv() {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match jobs.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                match store.upgrade() {
                    Some(store) => store.commit_batch(batch),
                    None => {
                        for job in batch {
                            job.finish(Err(StoreError::Unavailable("the store is closing".into())));
                        }
                        return;
                    }
                }
            }
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
    Ok(())
}

/// Starts the reader threads; they take reads from the returned queue until it is dropped
/// with the store. A thread that stays busy takes the next read without sleeping, so under
/// load reads cost no thread hand-off each, as a task per read on the blocking pool did.
fn start_readers(path: &Path) -> Result<tokio::sync::mpsc::Sender<ReadJob>, StoreError> {
    let (sender, receiver) = tokio::sync::mpsc::channel::<ReadJob>(4096);
    let receiver = Arc::new(Mutex::new(receiver));
    for i in 0..READERS {
        let conn = open_connection(path)?;
        let receiver = receiver.clone();
        std::thread::Builder::new()
            .name(format!("comet-store-read-{i}"))
            .spawn(move || loop {
                let job = receiver
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .blocking_recv();
                match job {
                    Some(job) => job(&conn),
                    None => return,
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start a reader thread: {e}")))?;
    }
    Ok(sender)
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    // First: with other processes on the file (several instances), even switching to WAL
    // can meet a lock (another's checkpoint), and must wait for it rather than fail the start.
    conn.pragma_update(None, "busy_timeout", 5000)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk (the WAL fsynced) before any write in it is acknowledged.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

fn parse_doc(text: &str) -> Result<Document, StoreError> {
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| StoreError::Unavailable(format!("stored document is not JSON: {e}")))?;
    match Value::from_json(json) {
        Ok(Value::Object(d)) => Ok(d),
        _ => Err(StoreError::Unavailable(
            "stored document is not an object".into(),
        )),
    }
}

fn doc_text(doc: &Document) -> Result<String, StoreError> {
    let text = Value::Object(doc.clone()).to_ejson_string();
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(StoreError::InvalidDocument(format!(
            "object to insert too large. size in bytes: {}, max size: {MAX_DOCUMENT_BYTES}",
            text.len()
        )));
    }
    Ok(text)
}

fn wire(id: &Value) -> Result<String, StoreError> {
    id_to_wire(id).map_err(|e| StoreError::InvalidDocument(e.to_string()))
}

/// Top-level differences between two versions of a document.
pub fn diff_top_level(before: &Document, after: &Document) -> UpdateDescription {
    let mut d = UpdateDescription::default();
    for (k, v) in after {
        if before.get(k) != Some(v) {
            d.updated_fields.insert(k.clone(), v.clone());
        }
    }
    for k in before.keys() {
        if !after.contains_key(k) {
            d.removed_fields.push(k.clone());
        }
    }
    d
}

fn event_text(e: &ChangeEvent) -> String {
    let mut doc = Document::default();
    doc.insert("op".into(), e.operation.as_str().into());
    doc.insert("coll".into(), Value::String(e.collection.to_string()));
    if let Some(id) = &e.id {
        doc.insert("id".into(), id.clone());
    }
    if let Some(full) = &e.full_document {
        doc.insert("doc".into(), Value::Object((**full).clone()));
    }
    if let Some(u) = &e.update_description {
        doc.insert("updated".into(), Value::Object(u.updated_fields.clone()));
        doc.insert(
            "removed".into(),
            Value::Array(
                u.removed_fields
                    .iter()
                    .map(|s| Value::String(s.clone()))
                    .collect(),
            ),
        );
    }
    Value::Object(doc).to_ejson_string()
}

fn event_from_text(seq: u64, text: &str) -> Result<ChangeEvent, StoreError> {
    let doc = parse_doc(text)?;
    let operation = doc
        .get("op")
        .and_then(Value::as_str)
        .and_then(OperationType::parse)
        .ok_or_else(|| StoreError::Unavailable(format!("change {seq} has no operation")))?;
    let collection: Arc<str> = doc.get("coll").and_then(Value::as_str).unwrap_or("").into();
    let update_description = match (doc.get("updated"), doc.get("removed")) {
        (Some(Value::Object(u)), Some(Value::Array(r))) => Some(UpdateDescription {
            updated_fields: u.clone(),
            removed_fields: r
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        }),
        _ => None,
    };
    Ok(ChangeEvent {
        seq,
        operation,
        collection,
        id: doc.get("id").cloned(),
        full_document: match doc.get("doc") {
            Some(Value::Object(d)) => Some(Arc::new(d.clone())),
            _ => None,
        },
        update_description,
        rename_to: None,
        received: std::time::Instant::now(),
    })
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Arc<Self>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join("comet.sqlite3");
        let conn = open_connection(&path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS changelog (seq INTEGER PRIMARY KEY, coll TEXT NOT NULL, event TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS indexed_fields (coll TEXT NOT NULL, path TEXT NOT NULL, complex INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (coll, path));",
        )?;
        let mut indexed: HashMap<String, Vec<IndexedField>> = HashMap::new();
        {
            let mut stmt = conn.prepare("SELECT coll, path, complex FROM indexed_fields")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (coll, path, complex) = row?;
                indexed.entry(coll).or_default().push(IndexedField {
                    column: key_column(&path),
                    path,
                    complex: complex != 0,
                });
            }
        }
        let indexed = indexed.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        let last: Option<i64> = conn
            .query_row("SELECT MAX(seq) FROM changelog", [], |r| r.get(0))
            .optional()?
            .flatten();
        let base: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'seq_floor'", [], |r| {
                r.get(0)
            })
            .optional()?;
        let floor = base.and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        let next_seq = (last.unwrap_or(0) as u64).max(floor) + 1;
        let reads = start_readers(&path)?;
        let (writes, write_jobs) = tokio::sync::mpsc::channel(WRITE_QUEUE);
        let (changes, _) = broadcast::channel(16 * 1024);
        let data_version: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        let store = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            dir: dir.to_owned(),
            writer: Mutex::new(Writer {
                conn,
                next_seq,
                log_cap: DEFAULT_LOG_CAP,
                data_version,
                docs: DocCache::default(),
                tables: Default::default(),
            }),
            writes,
            reads,
            changes,
            indexed: Arc::new(Mutex::new(indexed)),
        });
        start_writer(Arc::downgrade(&store), write_jobs)?;
        start_tailer(Arc::downgrade(&store));
        Ok(store)
    }

    /// Delivers what other processes committed to the file since the last look.
    fn deliver_foreign_changes(&self) -> Result<(), StoreError> {
        let mut w = self.lock_writer();
        for event in w.catch_up()? {
            let _ = self.changes.send(Arc::new(event));
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every committed change, in order, from now on. A lagging receiver has lost events
    /// and must resync.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeEvent>> {
        self.changes.subscribe()
    }

    /// The sequence number of the last committed change.
    pub fn last_seq(&self) -> u64 {
        self.lock_writer().next_seq - 1
    }

    /// Caps the database size in pages (tests use it to simulate a full disk).
    pub fn set_max_pages(&self, pages: u64) -> Result<(), StoreError> {
        self.lock_writer()
            .conn
            .pragma_update(None, "max_page_count", pages)?;
        Ok(())
    }

    /// Refuses or allows writes, as a store on a read-only file system would (tests use it).
    pub fn set_read_only(&self, read_only: bool) -> Result<(), StoreError> {
        self.lock_writer()
            .conn
            .pragma_update(None, "query_only", read_only)?;
        Ok(())
    }

    /// Sets how many changes the log keeps.
    pub fn set_log_cap(&self, cap: u64) {
        self.lock_writer().log_cap = cap.max(1);
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in the writer thread inside a transaction of its own or shared with the
    /// writes queued beside it (each in a savepoint: a failed one leaves the others), and
    /// answers once the transaction is committed and its events are in the feed.
    async fn write<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Writer) -> Result<(T, Vec<ChangeEvent>), StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            run: Some(f),
            value: None,
            reply,
        };
        self.writes
            .send(Box::new(job))
            .await
            .map_err(|_| StoreError::Unavailable("the writer thread is gone".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the writer thread stopped".into()))?
    }

    /// Commits `batch` in one transaction, one savepoint per write, then delivers the
    /// changes (other processes' first) and answers every write in order.
    fn commit_batch(&self, batch: Vec<Box<dyn WriteJob>>) {
        let mut w = self.lock_writer();
        let mut foreign = Vec::new();
        let opened = w
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(StoreError::from)
            .and_then(|()| {
                foreign = w.catch_up()?;
                Ok(())
            });
        if let Err(err) = opened {
            let _ = w.conn.execute_batch("ROLLBACK");
            for job in batch {
                job.finish(Err(StoreError::Unavailable(err.to_string())));
            }
            return;
        }
        let batch_start = w.next_seq;
        let mut events = Vec::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        for mut job in batch {
            let start = w.next_seq;
            let ran = w
                .conn
                .execute_batch("SAVEPOINT write")
                .map_err(StoreError::from)
                .and_then(|()| {
                    // A write that panics fails alone; the writer thread serves on.
                    let mine =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(&mut w)))
                            .unwrap_or_else(|_| {
                                Err(StoreError::Unavailable(
                                    "a write failed unexpectedly".into(),
                                ))
                            })?;
                    for e in &mine {
                        w.conn
                            .prepare_cached(
                                "INSERT INTO changelog (seq, coll, event) VALUES (?1, ?2, ?3)",
                            )?
                            .execute(params![e.seq as i64, &*e.collection, event_text(e)])?;
                    }
                    w.conn.execute_batch("RELEASE write")?;
                    Ok(mine)
                });
            match ran {
                Ok(mine) => {
                    w.next_seq = start + mine.len() as u64;
                    events.extend(mine);
                    outcomes.push((job, Ok(())));
                }
                Err(err) => {
                    let _ = w.conn.execute_batch("ROLLBACK TO write; RELEASE write");
                    w.next_seq = start;
                    w.docs.clear();
                    w.tables.clear();
                    outcomes.push((job, Err(err)));
                }
            }
        }
        let committed = w.conn.execute_batch("COMMIT");
        for e in foreign {
            let _ = self.changes.send(Arc::new(e));
        }
        if let Err(err) = committed {
            let _ = w.conn.execute_batch("ROLLBACK");
            w.next_seq = batch_start;
            w.docs.clear();
            w.tables.clear();
            for (job, outcome) in outcomes {
                job.finish(outcome.and(Err(StoreError::Unavailable(err.to_string()))));
            }
            return;
        }
        if let Some(last) = events.last() {
            if last.seq / 1024 != (batch_start - 1) / 1024 {
                let keep_from = last.seq.saturating_sub(w.log_cap);
                let _ = w.conn.execute(
                    "DELETE FROM changelog WHERE seq <= ?1",
                    params![keep_from as i64],
                );
            }
        }
        for e in events {
            // No receiver is fine: nobody observes yet.
            let _ = self.changes.send(Arc::new(e));
        }
        drop(w);
        for (job, outcome) in outcomes {
            job.finish(outcome);
        }
    }

    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        self.reads
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the reader threads are gone".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("a reader thread stopped".into()))?
    }

    /// Inserts one document; a missing `_id` gets a fresh random id.
    pub async fn insert(
        self: &Arc<Self>,
        collection: &str,
        doc: Document,
    ) -> Result<WriteAck, StoreError> {
        let prepared = PreparedInsert::new(collection, doc)?;
        let indexed = self.indexed.clone();
        self.write(move |w| prepared.apply(w, &indexed)).await
    }

    /// Updates the documents `selector` matches (the first only unless `multi`), inserting
    /// one when `upsert` and none matched.
    pub async fn update(
        self: &Arc<Self>,
        collection: &str,
        selector: Selector,
        update: Update,
        options: UpdateOptions,
    ) -> Result<UpdateAck, StoreError> {
        let table = table(collection)?;
        let collection: Arc<str> = collection.into();
        let indexed = self.indexed.clone();
        self.write(move |w| {
            apply_update(
                w,
                &indexed,
                &table,
                &collection,
                &selector,
                &update,
                options,
            )
        })
        .await
    }

    /// Removes the documents `selector` matches (the first only unless `multi`).
    pub async fn remove(
        self: &Arc<Self>,
        collection: &str,
        selector: Selector,
        options: RemoveOptions,
    ) -> Result<UpdateAck, StoreError> {
        let table = table(collection)?;
        let collection: Arc<str> = collection.into();
        let indexed = self.indexed.clone();
        self.write(move |w| apply_remove(w, &indexed, &table, &collection, &selector, options))
            .await
    }

    /// Applies `ops` in order in one transaction: all of them, or (at the first that fails)
    /// none.
    pub async fn write_all(
        self: &Arc<Self>,
        ops: Vec<WriteOp>,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        let mut prepared = Vec::with_capacity(ops.len());
        for op in ops {
            prepared.push(match op {
                WriteOp::Insert { collection, doc } => {
                    PreparedOp::Insert(PreparedInsert::new(&collection, doc)?)
                }
                WriteOp::Update { ref collection, .. } | WriteOp::Remove { ref collection, .. } => {
                    PreparedOp::Change {
                        table: table(collection)?,
                        op,
                    }
                }
            });
        }
        let indexed = self.indexed.clone();
        self.write(move |w| {
            let first_seq = w.next_seq;
            let mut outcomes = Vec::with_capacity(prepared.len());
            let mut events = Vec::new();
            for op in prepared {
                let (outcome, mine) = match op {
                    PreparedOp::Insert(insert) => {
                        let (ack, mine) = insert.apply(w, &indexed)?;
                        (WriteOutcome::Inserted(ack), mine)
                    }
                    PreparedOp::Change {
                        table,
                        op:
                            WriteOp::Update {
                                collection,
                                selector,
                                update,
                                options,
                            },
                    } => {
                        let (ack, mine) = apply_update(
                            w,
                            &indexed,
                            &table,
                            &collection.into(),
                            &selector,
                            &update,
                            options,
                        )?;
                        (WriteOutcome::Changed(ack), mine)
                    }
                    PreparedOp::Change {
                        table,
                        op:
                            WriteOp::Remove {
                                collection,
                                selector,
                                options,
                            },
                    } => {
                        let (ack, mine) = apply_remove(
                            w,
                            &indexed,
                            &table,
                            &collection.into(),
                            &selector,
                            options,
                        )?;
                        (WriteOutcome::Changed(ack), mine)
                    }
                    PreparedOp::Change {
                        op: WriteOp::Insert { .. },
                        ..
                    } => {
                        return Err(StoreError::Unavailable(
                            "an insert filed as a change".into(),
                        ))
                    }
                };
                // The next operation numbers its changes after these.
                w.next_seq += mine.len() as u64;
                events.extend(mine);
                outcomes.push(outcome);
            }
            w.next_seq = first_seq;
            Ok((outcomes, events))
        })
        .await
    }

    /// Reads documents: selector, then sort (ties by `_id`), skip, limit, projection. Indexed
    /// fields narrow the rows read and, when every sort field is indexed, give them in order
    /// so that reading stops at the limit; the matcher decides on every row either way.
    pub async fn find(
        self: &Arc<Self>,
        collection: &str,
        options: FindOptions,
    ) -> Result<Vec<Document>, StoreError> {
        let table = table(collection)?;
        let indexed = self.indexed.clone();
        let collection = collection.to_owned();
        self.read(move |conn| {
            if !table_exists(conn, &table)? {
                return Ok(Vec::new());
            }
            loop {
                let fields = fields_of(&indexed, &collection);
                let found = find_with(conn, &table, &fields, &options)?;
                // A write that made a field unusable while this ran: read again without it.
                if *fields == *fields_of(&indexed, &collection) {
                    return Ok(found);
                }
            }
        })
        .await
    }

    /// SQLite's plan for a `find` (`EXPLAIN QUERY PLAN`, one step per line): what shows
    /// whether an index serves it.
    pub async fn query_plan(
        self: &Arc<Self>,
        collection: &str,
        options: &FindOptions,
    ) -> Result<String, StoreError> {
        let table = table(collection)?;
        let fields = fields_of(&self.indexed, collection);
        let plan = Plan::new(&fields, &options.selector, &options.sort);
        self.read(move |conn| {
            let sql = format!("EXPLAIN QUERY PLAN {}", plan.sql(&table));
            let mut stmt = conn.prepare(&sql)?;
            let steps = stmt.query_map(params_from_iter(plan.params.iter()), |r| {
                r.get::<_, String>(3)
            })?;
            let mut out = Vec::new();
            for step in steps {
                out.push(step?);
            }
            Ok(out.join("\n"))
        })
        .await
    }

    /// Keeps a key column for each field of `keys` (and `_id`) and an SQLite index over
    /// them, in the directions given. Idempotent.
    pub async fn ensure_index(
        self: &Arc<Self>,
        collection: &str,
        keys: Sort,
    ) -> Result<(), StoreError> {
        let table = table(collection)?;
        if keys.is_empty() {
            return Err(StoreError::InvalidQuery(
                crate::model::query::QueryError::new("Index keys cannot be empty."),
            ));
        }
        let indexed = self.indexed.clone();
        let collection = collection.to_owned();
        let result = self
            .write({
                let indexed = indexed.clone();
                let collection = collection.clone();
                move |w| {
                    w.ensure_table(&table)?;
                    let mut paths: Vec<&str> =
                        keys.keys().iter().map(|(p, _)| p.as_str()).collect();
                    paths.push("_id");
                    for path in paths {
                        add_key_column(&w.conn, &indexed, &table, &collection, path)?;
                    }
                    let mut columns: Vec<String> = keys
                        .keys()
                        .iter()
                        .map(|(p, asc)| {
                            format!("{} {}", key_column(p), if *asc { "ASC" } else { "DESC" })
                        })
                        .collect();
                    columns.push(key_column("_id"));
                    let name = quote_ident(&format!(
                        "ix.{collection}.{}",
                        Value::Object(keys.to_document()).to_ejson_string()
                    ));
                    w.conn.execute_batch(&format!(
                        "CREATE INDEX IF NOT EXISTS {name} ON {table} ({})",
                        columns.join(", ")
                    ))?;
                    Ok(((), Vec::new()))
                }
            })
            .await;
        if result.is_err() {
            // The key columns added in the failed transaction are gone again.
            self.read(move |conn| {
                let fields = load_indexed_fields(conn, &collection)?;
                indexed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(collection, Arc::new(fields));
                Ok(())
            })
            .await?;
        }
        result
    }

    /// The changes after `seq`, in order, from the change log.
    pub async fn changes_since(
        self: &Arc<Self>,
        seq: u64,
    ) -> Result<Vec<Arc<ChangeEvent>>, StoreError> {
        self.read(move |conn| {
            let oldest: Option<i64> =
                conn.query_row("SELECT MIN(seq) FROM changelog", [], |r| r.get(0))?;
            if let Some(oldest) = oldest {
                if (oldest as u64) > seq + 1 {
                    return Err(StoreError::ResumeLost(seq));
                }
            }
            let mut stmt =
                conn.prepare("SELECT seq, event FROM changelog WHERE seq > ?1 ORDER BY seq")?;
            let rows = stmt.query_map(params![seq as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, text) = row?;
                out.push(Arc::new(event_from_text(seq as u64, &text)?));
            }
            Ok(out)
        })
        .await
    }
}

/// An insert checked and serialized before it reaches the writer.
struct PreparedInsert {
    table: String,
    collection: Arc<str>,
    id: Value,
    wire_id: String,
    text: String,
    doc: Document,
}

impl PreparedInsert {
    fn new(collection: &str, mut doc: Document) -> Result<Self, StoreError> {
        let table = table(collection)?;
        check_field_names(&doc, true).map_err(|e| StoreError::InvalidDocument(e.0))?;
        let id = super::ensure_id(&mut doc);
        Ok(Self {
            table,
            collection: collection.into(),
            wire_id: wire(&id)?,
            text: doc_text(&doc)?,
            id,
            doc,
        })
    }

    fn apply(
        self,
        w: &mut Writer,
        indexed: &IndexedFields,
    ) -> Result<(WriteAck, Vec<ChangeEvent>), StoreError> {
        let Self {
            table,
            collection,
            id,
            wire_id,
            text,
            doc,
        } = self;
        w.ensure_table(&table)?;
        let inserted = write_row(
            &w.conn,
            indexed,
            &table,
            &collection,
            RowWrite::InsertOrIgnore,
            &wire_id,
            &text,
            &doc,
        )?;
        if inserted == 0 {
            return Err(StoreError::DuplicateKey(format!(
                "E11000 duplicate key error collection: {collection} index: _id_ dup key: {{ _id: {} }}",
                id.to_ejson_string()
            )));
        }
        let seq = w.next_seq;
        let event = ChangeEvent::for_document(
            seq,
            OperationType::Insert,
            collection,
            Some(id.clone()),
            Some(Arc::new(doc)),
            None,
        );
        Ok((WriteAck { id, seq }, vec![event]))
    }
}

/// One operation of [`EmbeddedStore::write_all`], checked: an insert serialized, or an
/// update or remove with its table.
enum PreparedOp {
    Insert(PreparedInsert),
    Change { table: String, op: WriteOp },
}

/// The rows an update or remove applies to: every match, or the first unless `multi`.
fn targets(
    w: &mut Writer,
    indexed: &IndexedFields,
    table: &str,
    collection: &str,
    selector: &Selector,
    multi: bool,
) -> Result<Vec<(String, Document)>, StoreError> {
    if let Some(id) = selector.pinned_id() {
        let wire_id = wire(id)?;
        if let Some(doc) = w.docs.get(table, &wire_id) {
            return Ok(if selector.matches(doc) {
                vec![(wire_id, doc.clone())]
            } else {
                Vec::new()
            });
        }
        w.ensure_table(table)?;
        let found = scan(&w.conn, table, &[], selector, Some(1))?;
        for (id, doc) in &found {
            w.docs.put(table, id, doc.clone());
        }
        return Ok(found);
    }
    w.ensure_table(table)?;
    let fields = fields_of(indexed, collection);
    scan(
        &w.conn,
        table,
        &fields,
        selector,
        if multi { None } else { Some(1) },
    )
}

fn apply_update(
    w: &mut Writer,
    indexed: &IndexedFields,
    table: &str,
    collection: &Arc<str>,
    selector: &Selector,
    update: &Update,
    UpdateOptions { multi, upsert }: UpdateOptions,
) -> Result<(UpdateAck, Vec<ChangeEvent>), StoreError> {
    let targets = targets(w, indexed, table, collection, selector, multi)?;
    let mut ack = UpdateAck::default();
    let mut events = Vec::new();
    for (wire_id, before) in targets {
        ack.matched += 1;
        let after = update.apply(&before, None, false)?;
        if unchanged(&before, &after) {
            continue;
        }
        check_field_names(&after, true).map_err(|e| StoreError::InvalidDocument(e.0))?;
        let text = doc_text(&after)?;
        write_row(
            &w.conn,
            indexed,
            table,
            collection,
            RowWrite::Update,
            &wire_id,
            &text,
            &after,
        )?;
        w.docs.refresh(table, &wire_id, &after);
        ack.modified += 1;
        let seq = w.next_seq + events.len() as u64;
        let (operation, update_description) = if update.is_replacement() {
            (OperationType::Replace, None)
        } else {
            (OperationType::Update, Some(diff_top_level(&before, &after)))
        };
        events.push(ChangeEvent::for_document(
            seq,
            operation,
            collection.clone(),
            before.get("_id").cloned(),
            Some(Arc::new(after)),
            update_description,
        ));
        ack.seq = seq;
    }
    if ack.matched == 0 && upsert {
        let mut base = Document::default();
        for (field, value) in selector.equalities() {
            if !field.contains('.') {
                base.insert(field.to_owned(), value.clone());
            }
        }
        let mut doc = update.apply(&base, None, true)?;
        let id = super::ensure_id(&mut doc);
        check_field_names(&doc, true).map_err(|e| StoreError::InvalidDocument(e.0))?;
        let text = doc_text(&doc)?;
        write_row(
            &w.conn,
            indexed,
            table,
            collection,
            RowWrite::Insert,
            &wire(&id)?,
            &text,
            &doc,
        )?;
        let seq = w.next_seq + events.len() as u64;
        events.push(ChangeEvent::for_document(
            seq,
            OperationType::Insert,
            collection.clone(),
            Some(id.clone()),
            Some(Arc::new(doc)),
            None,
        ));
        ack.upserted_id = Some(id);
        ack.seq = seq;
    }
    Ok((ack, events))
}

fn apply_remove(
    w: &mut Writer,
    indexed: &IndexedFields,
    table: &str,
    collection: &Arc<str>,
    selector: &Selector,
    RemoveOptions { multi }: RemoveOptions,
) -> Result<(UpdateAck, Vec<ChangeEvent>), StoreError> {
    let targets = targets(w, indexed, table, collection, selector, multi)?;
    let mut ack = UpdateAck::default();
    let mut events = Vec::new();
    for (wire_id, before) in targets {
        w.conn.execute(
            &format!("DELETE FROM {table} WHERE id = ?1"),
            params![wire_id],
        )?;
        w.docs.remove(table, &wire_id);
        ack.matched += 1;
        ack.modified += 1;
        let seq = w.next_seq + events.len() as u64;
        events.push(ChangeEvent::for_document(
            seq,
            OperationType::Delete,
            collection.clone(),
            before.get("_id").cloned(),
            None,
            None,
        ));
        ack.seq = seq;
    }
    Ok((ack, events))
}

/// How often the file is checked for other processes' commits.
const TAIL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// Watches the file for commits by other processes (another comet on the same data
/// directory, a tool writing through this store) until the store is dropped.
fn start_tailer(store: Weak<EmbeddedStore>) {
    let spawned = std::thread::Builder::new()
        .name("comet-store-tail".into())
        .spawn(move || loop {
            std::thread::sleep(TAIL_INTERVAL);
            let Some(store) = store.upgrade() else { return };
            if let Err(err) = store.deliver_foreign_changes() {
                tracing::warn!(error = %err, "cannot read other processes' changes");
            }
        });
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "cannot watch the store for other processes' writes");
    }
}

impl EmbeddedStore {
    fn handle(&self) -> Result<Arc<Self>, StoreError> {
        self.me
            .upgrade()
            .ok_or_else(|| StoreError::Unavailable("the store is closing".into()))
    }
}

impl Store for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn insert(&self, collection: &str, doc: Document) -> StoreFuture<'_, WriteAck> {
        let collection = collection.to_owned();
        Box::pin(async move { self.handle()?.insert(&collection, doc).await })
    }

    fn update(
        &self,
        collection: &str,
        selector: Selector,
        update: Update,
        options: UpdateOptions,
    ) -> StoreFuture<'_, UpdateAck> {
        let collection = collection.to_owned();
        Box::pin(async move {
            self.handle()?
                .update(&collection, selector, update, options)
                .await
        })
    }

    fn remove(
        &self,
        collection: &str,
        selector: Selector,
        options: RemoveOptions,
    ) -> StoreFuture<'_, UpdateAck> {
        let collection = collection.to_owned();
        Box::pin(async move { self.handle()?.remove(&collection, selector, options).await })
    }

    fn write_all(&self, ops: Vec<WriteOp>) -> StoreFuture<'_, Vec<WriteOutcome>> {
        Box::pin(async move { self.handle()?.write_all(ops).await })
    }

    fn find(&self, collection: &str, options: FindOptions) -> StoreFuture<'_, Vec<Document>> {
        let collection = collection.to_owned();
        Box::pin(async move { self.handle()?.find(&collection, options).await })
    }

    fn ensure_index(&self, collection: &str, keys: Sort) -> StoreFuture<'_, ()> {
        let collection = collection.to_owned();
        Box::pin(async move { self.handle()?.ensure_index(&collection, keys).await })
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeEvent>> {
        EmbeddedStore::subscribe(self)
    }

    fn last_seq(&self) -> u64 {
        EmbeddedStore::last_seq(self)
    }
}

/// Whether an update left a document exactly as it was (values and field order).
fn unchanged(before: &Document, after: &Document) -> bool {
    before.len() == after.len()
        && before
            .iter()
            .zip(after.iter())
            .all(|((k1, v1), (k2, v2))| k1 == k2 && v1 == v2)
}

/// Documents in order of the sort, ties broken by `_id` so that results are stable.
pub fn sort_documents(docs: &mut [Document], sort: &Sort) {
    let null = Value::Null;
    docs.sort_by(|a, b| {
        sort.compare(a, b)
            .then_with(|| compare(a.get("_id").unwrap_or(&null), b.get("_id").unwrap_or(&null)))
    });
}

fn ensure_table(conn: &Connection, table: &str) -> Result<(), StoreError> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, doc TEXT NOT NULL) WITHOUT ROWID"
    ))?;
    Ok(())
}

fn table_exists(conn: &Connection, table: &str) -> Result<bool, StoreError> {
    let name = table.trim_matches('"');
    // Cached: every read asks, and parsing the statement each time showed in profiles.
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1")?
        .query_row(params![name], |r| r.get(0))?;
    Ok(n > 0)
}

/// Documents matching `selector` (at most `limit`): by primary key when it pins one `_id`,
/// else the rows the indexed fields allow, with the matcher applied in Rust.
fn scan(
    conn: &Connection,
    table: &str,
    fields: &[IndexedField],
    selector: &Selector,
    limit: Option<usize>,
) -> Result<Vec<(String, Document)>, StoreError> {
    let mut out = Vec::new();
    if let Some(id) = selector.pinned_id() {
        let wire_id = wire(id)?;
        let text: Option<String> = conn
            .prepare_cached(&format!("SELECT doc FROM {table} WHERE id = ?1"))?
            .query_row(params![wire_id], |r| r.get(0))
            .optional()?;
        if let Some(text) = text {
            let doc = parse_doc(&text)?;
            if selector.matches(&doc) {
                out.push((wire_id, doc));
            }
        }
        return Ok(out);
    }
    let plan = Plan::new(fields, selector, &Sort::default());
    plan.for_each_match(conn, table, selector, |id, doc| {
        out.push((id, doc));
        limit.is_none_or(|l| out.len() < l)
    })?;
    Ok(out)
}

/// A `find` through the plan its fields allow.
fn find_with(
    conn: &Connection,
    table: &str,
    fields: &[IndexedField],
    options: &FindOptions,
) -> Result<Vec<Document>, StoreError> {
    let plan = Plan::new(fields, &options.selector, &options.sort);
    // Rows that arrive in the cursor's order can stop early.
    let stop_after = if plan.sorted {
        options.limit.map(|l| l + options.skip)
    } else {
        None
    };
    let mut docs = Vec::new();
    if options.selector.pinned_id().is_some() {
        docs = scan(conn, table, fields, &options.selector, None)?
            .into_iter()
            .map(|(_, d)| d)
            .collect();
    } else {
        plan.for_each_match(conn, table, &options.selector, |_, doc| {
            docs.push(doc);
            stop_after.is_none_or(|n| docs.len() < n)
        })?;
    }
    if !plan.sorted {
        sort_documents(&mut docs, &options.sort);
    }
    Ok(docs
        .into_iter()
        .skip(options.skip)
        .take(options.limit.unwrap_or(usize::MAX))
        .map(|d| options.projection.apply(&d))
        .collect())
}

/// How rows are read: conditions on key columns and, when the sort allows, their order.
struct Plan {
    conditions: Vec<String>,
    params: Vec<SqlValue>,
    order: String,
    /// Rows arrive in the sort's order, ties by `_id`.
    sorted: bool,
}

impl Plan {
    fn new(fields: &[IndexedField], selector: &Selector, sort: &Sort) -> Self {
        let usable = |path: &str| fields.iter().find(|f| f.path == path && !f.complex);
        let mut conditions = Vec::new();
        let mut params: Vec<SqlValue> = Vec::new();
        let param = |params: &mut Vec<SqlValue>, key: Vec<u8>| {
            params.push(SqlValue::Blob(key));
            format!("?{}", params.len())
        };
        for (path, bound) in selector.index_bounds() {
            if let ("_id", IndexBound::OneOf(values)) = (path, &bound) {
                // The primary key serves `_id: {$in: [...]}` whether or not `_id` has a key column.
                let ids: Option<Vec<String>> = values.iter().map(|v| wire(v).ok()).collect();
                if let Some(ids) = ids {
                    let list: Vec<String> = ids
                        .into_iter()
                        .map(|id| {
                            params.push(SqlValue::Text(id));
                            format!("?{}", params.len())
                        })
                        .collect();
                    conditions.push(format!("id IN ({})", list.join(", ")));
                }
            }
            let Some(field) = usable(path) else { continue };
            let column = &field.column;
            match bound {
                IndexBound::OneOf(values) => {
                    let list: Vec<String> = values
                        .iter()
                        .filter_map(|v| index_key::encode(v))
                        .map(|k| param(&mut params, k))
                        .collect();
                    conditions.push(format!("{column} IN ({})", list.join(", ")));
                }
                IndexBound::Range { lower, upper } => {
                    if let Some((v, inclusive)) = lower {
                        if let Some(k) = index_key::encode(v) {
                            let op = if inclusive { ">=" } else { ">" };
                            let from = param(&mut params, k);
                            let to = param(&mut params, index_key::type_end(v));
                            conditions.push(format!("{column} {op} {from} AND {column} < {to}"));
                        }
                    }
                    if let Some((v, inclusive)) = upper {
                        if let Some(k) = index_key::encode(v) {
                            let op = if inclusive { "<=" } else { "<" };
                            let to = param(&mut params, k);
                            let from = param(&mut params, index_key::type_start(v));
                            conditions.push(format!("{column} {op} {to} AND {column} >= {from}"));
                        }
                    }
                }
            }
        }
        // Without a sort, the order is `_id`'s, so that windows are the same on every read.
        let sorted =
            usable("_id").is_some() && sort.keys().iter().all(|(p, _)| usable(p).is_some());
        let order = if sorted {
            let mut terms: Vec<String> = sort
                .keys()
                .iter()
                .map(|(p, asc)| format!("{} {}", key_column(p), if *asc { "ASC" } else { "DESC" }))
                .collect();
            if !sort.keys().iter().any(|(p, _)| p == "_id") {
                terms.push(format!("{} ASC", key_column("_id")));
            }
            format!(" ORDER BY {}", terms.join(", "))
        } else if conditions.is_empty() {
            " ORDER BY id".to_owned()
        } else {
            String::new()
        };
        Plan {
            conditions,
            params,
            order,
            sorted,
        }
    }

    fn sql(&self, table: &str) -> String {
        let filter = if self.conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conditions.join(" AND "))
        };
        format!("SELECT id, doc FROM {table}{filter}{}", self.order)
    }

    /// Calls `each` with every matching row, in plan order, until it returns false.
    fn for_each_match(
        &self,
        conn: &Connection,
        table: &str,
        selector: &Selector,
        mut each: impl FnMut(String, Document) -> bool,
    ) -> Result<(), StoreError> {
        let mut stmt = conn.prepare_cached(&self.sql(table))?;
        let mut rows = stmt.query(params_from_iter(self.params.iter()))?;
        while let Some(row) = rows.next()? {
            let text: String = row.get(1)?;
            let doc = parse_doc(&text)?;
            if selector.matches(&doc) && !each(row.get(0)?, doc) {
                break;
            }
        }
        Ok(())
    }
}

/// How [`write_row`] writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RowWrite {
    Insert,
    InsertOrIgnore,
    Update,
}

/// Writes one row with its key columns; returns the rows changed. A field that turns out
/// complex is marked so (in this transaction and in the shared list) before the write.
#[allow(clippy::too_many_arguments)]
fn write_row(
    conn: &Connection,
    indexed: &IndexedFields,
    table: &str,
    collection: &str,
    how: RowWrite,
    wire_id: &str,
    text: &str,
    doc: &Document,
) -> Result<usize, StoreError> {
    let fields = fields_of(indexed, collection);
    let mut values: Vec<SqlValue> = vec![
        SqlValue::Text(wire_id.to_owned()),
        SqlValue::Text(text.to_owned()),
    ];
    for field in fields.iter() {
        match index_key::field_key(doc, &field.path) {
            FieldKey::Key(k) => values.push(SqlValue::Blob(k)),
            FieldKey::Complex => {
                if !field.complex {
                    mark_complex(conn, indexed, collection, &field.path)?;
                }
                values.push(SqlValue::Null);
            }
        }
    }
    let sql = match how {
        RowWrite::Update => {
            let sets: String = fields
                .iter()
                .enumerate()
                .map(|(i, f)| format!(", {} = ?{}", f.column, i + 3))
                .collect();
            format!("UPDATE {table} SET doc = ?2{sets} WHERE id = ?1")
        }
        RowWrite::Insert | RowWrite::InsertOrIgnore => {
            let columns: String = fields.iter().map(|f| format!(", {}", f.column)).collect();
            let placeholders: String = (0..fields.len()).map(|i| format!(", ?{}", i + 3)).collect();
            let verb = if how == RowWrite::Insert {
                "INSERT"
            } else {
                "INSERT OR IGNORE"
            };
            format!("{verb} INTO {table} (id, doc{columns}) VALUES (?1, ?2{placeholders})")
        }
    };
    Ok(conn
        .prepare_cached(&sql)?
        .execute(params_from_iter(values.iter()))?)
}

fn mark_complex(
    conn: &Connection,
    indexed: &IndexedFields,
    collection: &str,
    path: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE indexed_fields SET complex = 1 WHERE coll = ?1 AND path = ?2",
        params![collection, path],
    )?;
    tracing::info!(
        collection,
        field = path,
        "field holds arrays or documents: its index no longer serves queries"
    );
    let mut map = indexed.lock().unwrap_or_else(|p| p.into_inner());
    let fields: Vec<IndexedField> = map
        .get(collection)
        .map(|f| {
            f.iter()
                .cloned()
                .map(|mut f| {
                    f.complex |= f.path == path;
                    f
                })
                .collect()
        })
        .unwrap_or_default();
    map.insert(collection.to_owned(), Arc::new(fields));
    Ok(())
}

fn load_indexed_fields(
    conn: &Connection,
    collection: &str,
) -> Result<Vec<IndexedField>, StoreError> {
    let mut stmt = conn.prepare("SELECT path, complex FROM indexed_fields WHERE coll = ?1")?;
    let rows = stmt.query_map(params![collection], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (path, complex) = row?;
        out.push(IndexedField {
            column: key_column(&path),
            path,
            complex: complex != 0,
        });
    }
    Ok(out)
}

/// Adds `path`'s key column to the table and fills it from every document (no-op when it
/// is there).
fn add_key_column(
    conn: &Connection,
    indexed: &IndexedFields,
    table: &str,
    collection: &str,
    path: &str,
) -> Result<(), StoreError> {
    if fields_of(indexed, collection)
        .iter()
        .any(|f| f.path == path)
    {
        return Ok(());
    }
    let column = key_column(path);
    conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} BLOB"))?;
    let mut complex = false;
    let mut keys: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    {
        let mut stmt = conn.prepare(&format!("SELECT id, doc FROM {table}"))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let text: String = row.get(1)?;
            let doc = parse_doc(&text)?;
            let key = match index_key::field_key(&doc, path) {
                FieldKey::Key(k) => Some(k),
                FieldKey::Complex => {
                    complex = true;
                    None
                }
            };
            keys.push((row.get(0)?, key));
        }
    }
    let mut update = conn.prepare(&format!("UPDATE {table} SET {column} = ?2 WHERE id = ?1"))?;
    for (id, key) in keys {
        update.execute(params![id, key])?;
    }
    conn.execute(
        "INSERT OR REPLACE INTO indexed_fields (coll, path, complex) VALUES (?1, ?2, ?3)",
        params![collection, path, i64::from(complex)],
    )?;
    let mut map = indexed.lock().unwrap_or_else(|p| p.into_inner());
    let mut fields: Vec<IndexedField> = map.get(collection).map(|f| f.to_vec()).unwrap_or_default();
    fields.push(IndexedField {
        path: path.to_owned(),
        column,
        complex,
    });
    map.insert(collection.to_owned(), Arc::new(fields));
    Ok(())
}
