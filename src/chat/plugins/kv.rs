//! Each plugin's key-value store, in the shared store so every instance sees the same
//! values: get, set (with an expiry or not), compare-and-set, delete, list by prefix.
//!
//! Owns the records' shape (`_id` `<plugin>/<key>`, the value as its canonical JSON text so
//! that equality is exact whatever order a plugin wrote an object's keys in) and the rule
//! that an expired value reads as absent. A plugin names only its own keys: the plugin's id
//! comes from the process that called, never from the call. It must not know about the
//! wire.

use crate::chat::collections::PLUGIN_KV;
use crate::engine::build::{doc, find_one, now_ms, selector, update};
use crate::engine::error::ServiceError;
use crate::model::Value;
use crate::storage::{FindOptions, RemoveOptions, Store, StoreError, UpdateOptions};
use serde_json::{json, Value as Json};
use std::sync::Arc;

/// Longest key.
pub const MAX_KEY: usize = 256;
/// Largest value, as JSON text.
pub const MAX_VALUE: usize = 512 * 1024;
/// Most keys one list returns.
pub const MAX_LISTED: usize = 1000;

/// One plugin's keys.
#[derive(Clone)]
pub struct KvStore {
    store: Arc<dyn Store>,
    plugin: Arc<str>,
}

/// A refusal a plugin reads.
fn invalid(reason: &str) -> ServiceError {
    crate::chat::client_error("error-invalid-params", reason)
}

fn stored(err: StoreError) -> ServiceError {
    ServiceError::from_store(&err)
}

/// `value` as text with every object's keys sorted, so equal values have equal texts.
pub fn canonical(value: &Json) -> String {
    fn sorted(value: &Json) -> Json {
        match value {
            Json::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Json::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&map[k])))
                        .collect(),
                )
            }
            Json::Array(items) => Json::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

impl KvStore {
    pub fn new(store: Arc<dyn Store>, plugin: &str) -> Self {
        Self {
            store,
            plugin: plugin.into(),
        }
    }

    fn id(&self, key: &str) -> Result<String, ServiceError> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(invalid("A key is 1 to 256 bytes"));
        }
        Ok(format!("{}/{key}", self.plugin))
    }

    fn text_of(value: &Json) -> Result<String, ServiceError> {
        let text = canonical(value);
        if text.len() > MAX_VALUE {
            return Err(invalid("A value is at most 512 KiB of JSON"));
        }
        Ok(text)
    }

    fn expiry(expire_in_ms: Option<u64>) -> Json {
        match expire_in_ms {
            Some(ms) => json!({"$date": now_ms() + ms as f64}),
            None => Json::Null,
        }
    }

    /// The value of `key`, unless absent or expired.
    pub async fn get(&self, key: &str) -> Result<Option<Json>, ServiceError> {
        let id = self.id(key)?;
        let found = find_one(&*self.store, PLUGIN_KV, json!({"_id": id})).await?;
        let now = now_ms();
        Ok(found
            .as_ref()
            .filter(|d| match d.get("expireAt") {
                Some(Value::Date(at)) => *at > now,
                _ => true,
            })
            .and_then(|d| d.get("value").and_then(Value::as_str))
            .and_then(|text| serde_json::from_str(text).ok()))
    }

    /// Sets `key` (a `null` value deletes it), expiring after `expire_in_ms` when given.
    pub async fn set(
        &self,
        key: &str,
        value: &Json,
        expire_in_ms: Option<u64>,
    ) -> Result<(), ServiceError> {
        if value.is_null() {
            return self.delete(key).await;
        }
        let id = self.id(key)?;
        let text = Self::text_of(value)?;
        self.store
            .update(
                PLUGIN_KV,
                selector(json!({"_id": id}))?,
                update(json!({"$set": {
                    "plugin": &*self.plugin, "key": key, "value": text,
                    "expireAt": Self::expiry(expire_in_ms),
                }}))?,
                UpdateOptions {
                    upsert: true,
                    ..Default::default()
                },
            )
            .await
            .map_err(stored)?;
        Ok(())
    }

    /// Sets `key` to `new` only if it holds `old` now (`null`: only if it is absent);
    /// whether it did. Of several writers racing from the same `old`, exactly one wins.
    pub async fn compare_and_set(
        &self,
        key: &str,
        old: &Json,
        new: &Json,
        expire_in_ms: Option<u64>,
    ) -> Result<bool, ServiceError> {
        let id = self.id(key)?;
        let now = json!({"$date": now_ms()});
        if old.is_null() {
            // An expired value counts as absent: take it away first (only if still expired).
            self.store
                .remove(
                    PLUGIN_KV,
                    selector(json!({"_id": &id, "expireAt": {"$lte": now}}))?,
                    RemoveOptions::default(),
                )
                .await
                .map_err(stored)?;
            if new.is_null() {
                return Ok(self.get(key).await?.is_none());
            }
            let record = doc(json!({
                "_id": id, "plugin": &*self.plugin, "key": key,
                "value": Self::text_of(new)?, "expireAt": Self::expiry(expire_in_ms),
            }))?;
            return match self.store.insert(PLUGIN_KV, record).await {
                Ok(_) => Ok(true),
                Err(StoreError::DuplicateKey(_)) => Ok(false),
                Err(other) => Err(stored(other)),
            };
        }
        let live = json!({"$or": [{"expireAt": null}, {"expireAt": {"$gt": now}}]});
        let matching = json!({"_id": &id, "value": Self::text_of(old)?, "$and": [live]});
        let ack = if new.is_null() {
            self.store
                .remove(PLUGIN_KV, selector(matching)?, RemoveOptions::default())
                .await
        } else {
            self.store
                .update(
                    PLUGIN_KV,
                    selector(matching)?,
                    update(json!({"$set": {
                        "value": Self::text_of(new)?, "expireAt": Self::expiry(expire_in_ms),
                    }}))?,
                    UpdateOptions::default(),
                )
                .await
        }
        .map_err(stored)?;
        Ok(ack.matched == 1)
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), ServiceError> {
        let id = self.id(key)?;
        self.store
            .remove(
                PLUGIN_KV,
                selector(json!({"_id": id}))?,
                RemoveOptions::default(),
            )
            .await
            .map_err(stored)?;
        Ok(())
    }

    /// The live keys starting with `prefix`, in order, a page of them.
    pub async fn list(
        &self,
        prefix: &str,
        offset: usize,
        count: usize,
    ) -> Result<Vec<String>, ServiceError> {
        if prefix.len() > MAX_KEY {
            return Err(invalid("A prefix is at most 256 bytes"));
        }
        let pattern = format!(
            "^{}",
            crate::chat::literal_pattern(&format!("{}/{prefix}", self.plugin))
        );
        let now = json!({"$date": now_ms()});
        let found = self
            .store
            .find(
                PLUGIN_KV,
                FindOptions {
                    selector: selector(json!({
                        "_id": {"$regex": pattern},
                        "$or": [{"expireAt": null}, {"expireAt": {"$gt": now}}],
                    }))?,
                    sort: crate::model::query::Sort::parse(&doc(json!({"_id": 1}))?)
                        .map_err(|e| ServiceError::internal(e.0))?,
                    skip: offset,
                    limit: Some(count.clamp(1, MAX_LISTED)),
                    ..Default::default()
                },
            )
            .await
            .map_err(stored)?;
        Ok(found
            .iter()
            .filter_map(|d| d.get("key").and_then(Value::as_str).map(str::to_owned))
            .collect())
    }

    /// Every key of the plugin, gone (the plugin was removed).
    pub async fn clear(&self) -> Result<(), ServiceError> {
        self.store
            .remove(
                PLUGIN_KV,
                selector(json!({"plugin": &*self.plugin}))?,
                RemoveOptions { multi: true },
            )
            .await
            .map_err(stored)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::plugins::TestDir;

    #[test]
    fn equal_values_have_equal_texts_whatever_their_key_order() {
        let a: Json =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"d":2,"c":3}],"x":null}}"#).unwrap();
        let b: Json =
            serde_json::from_str(r#"{"a":{"x":null,"y":[1,{"c":3,"d":2}]},"b":1}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        assert_ne!(canonical(&a), canonical(&json!({"b": 2})));
    }

    #[tokio::test]
    async fn values_expire_compare_and_set_decides_once_and_keys_stay_in_their_plugin() {
        let dir = TestDir::new("kv");
        let store: Arc<dyn Store> = crate::storage::EmbeddedStore::open(dir.0.as_path()).unwrap();
        let kv = KvStore::new(store.clone(), "counter");
        let other = KvStore::new(store, "other");
        assert_eq!(kv.get("n").await.unwrap(), None);
        assert!(kv
            .compare_and_set("n", &Json::Null, &json!(1), None)
            .await
            .unwrap());
        assert!(!kv
            .compare_and_set("n", &Json::Null, &json!(1), None)
            .await
            .unwrap());
        assert!(!kv
            .compare_and_set("n", &json!(5), &json!(6), None)
            .await
            .unwrap());
        assert!(kv
            .compare_and_set("n", &json!(1), &json!({"b": 1, "a": 2}), None)
            .await
            .unwrap());
        assert!(kv
            .compare_and_set("n", &json!({"a": 2, "b": 1}), &json!(3), None)
            .await
            .unwrap());
        assert_eq!(kv.get("n").await.unwrap(), Some(json!(3)));
        // Another plugin's keys are its own.
        assert_eq!(other.get("n").await.unwrap(), None);
        other.set("n", &json!("theirs"), None).await.unwrap();
        assert_eq!(kv.get("n").await.unwrap(), Some(json!(3)));
        // Expiry: an expired value is absent, and compare-and-set from absent takes it.
        kv.set("short", &json!(true), Some(1)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(kv.get("short").await.unwrap(), None);
        assert!(kv
            .compare_and_set("short", &Json::Null, &json!(2), None)
            .await
            .unwrap());
        kv.set("list/a", &json!(1), None).await.unwrap();
        kv.set("list/b", &json!(1), None).await.unwrap();
        kv.set("lisx", &json!(1), None).await.unwrap();
        assert_eq!(
            kv.list("list/", 0, 10).await.unwrap(),
            vec!["list/a", "list/b"]
        );
        assert_eq!(kv.list("list/", 1, 10).await.unwrap(), vec!["list/b"]);
        kv.delete("list/a").await.unwrap();
        assert_eq!(kv.list("list", 0, 10).await.unwrap(), vec!["list/b"]);
        assert!(kv.set("", &json!(1), None).await.is_err());
        kv.clear().await.unwrap();
        assert!(kv.list("", 0, 10).await.unwrap().is_empty());
        assert_eq!(other.get("n").await.unwrap(), Some(json!("theirs")));
    }
}
