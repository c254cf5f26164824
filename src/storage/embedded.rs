//! The embedded store: SQLite on disk (WAL, one writer, pooled readers), a table per
//! collection holding EJSON text, and a change log written in the same transaction as each
//! change, so that an acknowledged write is never lost and its sequence number is a resume
//! token that survives restarts.

use super::{ChangeEvent, OperationType, StoreError, UpdateDescription};
use crate::model::query::update::check_field_names;
use crate::model::query::{compare::compare, Projection, Selector, Sort, Update};
use crate::model::{id_to_wire, Document, Value};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// MongoDB's largest document.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;
/// Changes kept in the log (older ones are trimmed, like a capped oplog).
pub const DEFAULT_LOG_CAP: u64 = 100_000;

/// What `find` reads.
#[derive(Clone, Debug)]
pub struct FindOptions {
    pub selector: Selector,
    pub sort: Sort,
    pub skip: usize,
    pub limit: Option<usize>,
    pub projection: Projection,
}

impl Default for FindOptions {
    fn default() -> Self {
        Self {
            selector: Selector::everything(),
            sort: Sort::default(),
            skip: 0,
            limit: None,
            projection: Projection::all(),
        }
    }
}

/// An acknowledged insert.
#[derive(Clone, Debug)]
pub struct WriteAck {
    pub id: Value,
    /// Sequence number of the change: wait for it to be observed before `updated`.
    pub seq: u64,
}

/// An acknowledged update or remove.
#[derive(Clone, Debug, Default)]
pub struct UpdateAck {
    pub matched: u64,
    pub modified: u64,
    pub upserted_id: Option<Value>,
    /// Highest sequence number written (0 when nothing changed).
    pub seq: u64,
}

struct Writer {
    conn: Connection,
    next_seq: u64,
    log_cap: u64,
}

/// The embedded store.
pub struct EmbeddedStore {
    dir: PathBuf,
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
    changes: broadcast::Sender<Arc<ChangeEvent>>,
}

fn table(collection: &str) -> Result<String, StoreError> {
    let ok = !collection.is_empty()
        && collection.len() <= 120
        && !collection.starts_with('$')
        && !collection.starts_with("system.")
        && collection
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        return Err(StoreError::InvalidCollection(collection.to_owned()));
    }
    Ok(format!("\"col.{collection}\""))
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
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
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
        )?;
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
        let readers = (0..4)
            .map(|_| open_connection(&path))
            .collect::<Result<Vec<_>, _>>()?;
        let (changes, _) = broadcast::channel(16 * 1024);
        Ok(Arc::new(Self {
            dir: dir.to_owned(),
            writer: Mutex::new(Writer {
                conn,
                next_seq,
                log_cap: DEFAULT_LOG_CAP,
            }),
            readers: Mutex::new(readers),
            changes,
        }))
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

    /// Sets how many changes the log keeps.
    pub fn set_log_cap(&self, cap: u64) {
        self.lock_writer().log_cap = cap.max(1);
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn write<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Writer) -> Result<(T, Vec<ChangeEvent>), StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = store.lock_writer();
            let start_seq = w.next_seq;
            let result = (|| {
                w.conn.execute_batch("BEGIN IMMEDIATE")?;
                match f(&mut w) {
                    Ok((value, events)) => {
                        for e in &events {
                            w.conn.execute(
                                "INSERT INTO changelog (seq, coll, event) VALUES (?1, ?2, ?3)",
                                params![e.seq as i64, &*e.collection, event_text(e)],
                            )?;
                        }
                        w.conn.execute_batch("COMMIT")?;
                        Ok((value, events))
                    }
                    Err(err) => Err(err),
                }
            })();
            match result {
                Ok((value, events)) => {
                    if let Some(last) = events.last() {
                        w.next_seq = last.seq + 1;
                        if last.seq / 1024 != (start_seq - 1) / 1024 {
                            let keep_from = last.seq.saturating_sub(w.log_cap);
                            let _ = w.conn.execute(
                                "DELETE FROM changelog WHERE seq <= ?1",
                                params![keep_from as i64],
                            );
                        }
                    }
                    for e in events {
                        // No receiver is fine: nobody observes yet.
                        let _ = store.changes.send(Arc::new(e));
                    }
                    Ok(value)
                }
                Err(err) => {
                    let _ = w.conn.execute_batch("ROLLBACK");
                    w.next_seq = start_seq;
                    Err(err)
                }
            }
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("writer task failed: {e}")))?
    }

    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = store
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
            let conn = match conn {
                Some(c) => c,
                None => open_connection(&store.dir.join("comet.sqlite3"))?,
            };
            let result = f(&conn);
            store
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("reader task failed: {e}")))?
    }

    /// Inserts one document; a missing `_id` gets a fresh random id.
    pub async fn insert(
        self: &Arc<Self>,
        collection: &str,
        mut doc: Document,
    ) -> Result<WriteAck, StoreError> {
        let table = table(collection)?;
        check_field_names(&doc, true).map_err(|e| StoreError::InvalidDocument(e.0))?;
        if !doc.contains_key("_id") {
            doc.shift_insert(
                0,
                "_id".into(),
                Value::String(crate::model::random::random_id()),
            );
        }
        let id = doc.get("_id").cloned().unwrap_or(Value::Null);
        let wire_id = wire(&id)?;
        let text = doc_text(&doc)?;
        let collection: Arc<str> = collection.into();
        self.write(move |w| {
            ensure_table(&w.conn, &table)?;
            let inserted = w.conn.execute(
                &format!("INSERT OR IGNORE INTO {table} (id, doc) VALUES (?1, ?2)"),
                params![wire_id, text],
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
                collection.clone(),
                Some(id.clone()),
                Some(Arc::new(doc)),
                None,
            );
            Ok((WriteAck { id, seq }, vec![event]))
        })
        .await
    }

    /// Updates the documents `selector` matches (the first only unless `multi`), inserting
    /// one when `upsert` and none matched.
    pub async fn update(
        self: &Arc<Self>,
        collection: &str,
        selector: Selector,
        update: Update,
        multi: bool,
        upsert: bool,
    ) -> Result<UpdateAck, StoreError> {
        let table = table(collection)?;
        let collection: Arc<str> = collection.into();
        self.write(move |w| {
            ensure_table(&w.conn, &table)?;
            let targets = scan(
                &w.conn,
                &table,
                &selector,
                if multi { None } else { Some(1) },
            )?;
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
                w.conn.execute(
                    &format!("UPDATE {table} SET doc = ?2 WHERE id = ?1"),
                    params![wire_id, text],
                )?;
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
                if !doc.contains_key("_id") {
                    doc.shift_insert(
                        0,
                        "_id".into(),
                        Value::String(crate::model::random::random_id()),
                    );
                }
                check_field_names(&doc, true).map_err(|e| StoreError::InvalidDocument(e.0))?;
                let id = doc.get("_id").cloned().unwrap_or(Value::Null);
                let text = doc_text(&doc)?;
                w.conn.execute(
                    &format!("INSERT INTO {table} (id, doc) VALUES (?1, ?2)"),
                    params![wire(&id)?, text],
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
        })
        .await
    }

    /// Removes the documents `selector` matches (the first only unless `multi`).
    pub async fn remove(
        self: &Arc<Self>,
        collection: &str,
        selector: Selector,
        multi: bool,
    ) -> Result<UpdateAck, StoreError> {
        let table = table(collection)?;
        let collection: Arc<str> = collection.into();
        self.write(move |w| {
            ensure_table(&w.conn, &table)?;
            let targets = scan(
                &w.conn,
                &table,
                &selector,
                if multi { None } else { Some(1) },
            )?;
            let mut ack = UpdateAck::default();
            let mut events = Vec::new();
            for (wire_id, before) in targets {
                w.conn.execute(
                    &format!("DELETE FROM {table} WHERE id = ?1"),
                    params![wire_id],
                )?;
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
        })
        .await
    }

    /// Reads documents: selector, then sort (ties by `_id`), skip, limit, projection.
    pub async fn find(
        self: &Arc<Self>,
        collection: &str,
        options: FindOptions,
    ) -> Result<Vec<Document>, StoreError> {
        let table = table(collection)?;
        self.read(move |conn| {
            if !table_exists(conn, &table)? {
                return Ok(Vec::new());
            }
            let unsorted_limit = if options.sort.is_empty() {
                options.limit.map(|l| l + options.skip)
            } else {
                None
            };
            let mut docs: Vec<Document> = scan(conn, &table, &options.selector, unsorted_limit)?
                .into_iter()
                .map(|(_, d)| d)
                .collect();
            sort_documents(&mut docs, &options.sort);
            Ok(docs
                .into_iter()
                .skip(options.skip)
                .take(options.limit.unwrap_or(usize::MAX))
                .map(|d| options.projection.apply(&d))
                .collect())
        })
        .await
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
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        params![name],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// Documents matching `selector`: by primary key when it pins one `_id`, else a scan with
/// the matcher applied in Rust.
fn scan(
    conn: &Connection,
    table: &str,
    selector: &Selector,
    limit: Option<usize>,
) -> Result<Vec<(String, Document)>, StoreError> {
    let mut out = Vec::new();
    if let Some(id) = selector.single_id() {
        let wire_id = wire(id)?;
        let text: Option<String> = conn
            .query_row(
                &format!("SELECT doc FROM {table} WHERE id = ?1"),
                params![wire_id],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(text) = text {
            let doc = parse_doc(&text)?;
            if selector.matches(&doc) {
                out.push((wire_id, doc));
            }
        }
        return Ok(out);
    }
    let mut stmt = conn.prepare_cached(&format!("SELECT id, doc FROM {table} ORDER BY id"))?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let text: String = row.get(1)?;
        let doc = parse_doc(&text)?;
        if selector.matches(&doc) {
            out.push((row.get(0)?, doc));
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
    }
    Ok(out)
}
