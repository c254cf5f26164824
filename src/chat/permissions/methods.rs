//! `permissions/get` (with the "since" form), as Rocket.Chat's clients sync permissions.

use super::Permissions;
use crate::engine::args::{check_all, Pattern};
use crate::engine::registry::Registry;
use crate::model::{Document, Value};
use std::sync::Arc;

pub fn register(registry: &mut Registry, permissions: Arc<Permissions>) {
    registry.method("permissions/get", move |_ctx, params| {
        let permissions = permissions.clone();
        async move {
            check_all(&[Pattern::maybe(Pattern::DATE)], &params)?;
            let since = match params.first() {
                Some(Value::Date(ms)) => Some(*ms),
                _ => None,
            };
            let list = Value::Array(
                permissions
                    .documents(since)
                    .iter()
                    .map(|d| Value::Object((**d).clone()))
                    .collect(),
            );
            if since.is_none() {
                return Ok(Some(list));
            }
            let mut out = Document::default();
            out.insert("update".into(), list);
            out.insert("remove".into(), Value::Array(Vec::new()));
            Ok(Some(Value::Object(out)))
        }
    });
}
