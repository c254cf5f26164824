//! Small builders services share for the documents, selectors and updates they write
//! themselves (never from client input: those are parsed and checked where they arrive).

use super::error::ServiceError;
use crate::model::query::{Selector, Update};
use crate::model::{Document, Value};

/// Now, in milliseconds since the epoch (what `Value::Date` holds).
pub fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_millis() as f64)
}

/// A document from JSON written in the code (EJSON forms such as `$date` are read).
pub fn doc(json: serde_json::Value) -> Result<Document, ServiceError> {
    match Value::from_json(json) {
        Ok(Value::Object(d)) => Ok(d),
        _ => Err(ServiceError::internal("not a document")),
    }
}

pub fn selector(json: serde_json::Value) -> Result<Selector, ServiceError> {
    Selector::parse(&doc(json)?).map_err(|e| ServiceError::internal(e.0))
}

pub fn update(json: serde_json::Value) -> Result<Update, ServiceError> {
    Update::parse(&doc(json)?).map_err(|e| ServiceError::internal(e.0))
}

/// Writes a default document unless one with its `_id` is there already (another start,
/// another writer): what first-start set-up does for every default it owns.
pub async fn insert_default(
    store: &dyn crate::storage::Store,
    collection: &str,
    document: Document,
) -> Result<(), ServiceError> {
    match store.insert(collection, document).await {
        Ok(_) | Err(crate::storage::StoreError::DuplicateKey(_)) => Ok(()),
        Err(other) => Err(ServiceError::from_store(&other)),
    }
}

/// `value` as EJSON-shaped JSON, for embedding a stored value in a document built by
/// [`doc`] (which reads the `$`-forms back).
pub fn to_json(value: &Value) -> serde_json::Value {
    serde_json::from_str(&value.to_ejson_string()).unwrap_or(serde_json::Value::Null)
}

/// The first document of `collection` that `filter` (written in the code, never taken from
/// a client as a whole) matches, if any.
pub async fn find_one(
    store: &dyn crate::storage::Store,
    collection: &str,
    filter: serde_json::Value,
) -> Result<Option<Document>, ServiceError> {
    let mut found = store
        .find(
            collection,
            crate::storage::FindOptions {
                selector: selector(filter)?,
                limit: Some(1),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| ServiceError::from_store(&e))?;
    Ok(found.pop())
}
