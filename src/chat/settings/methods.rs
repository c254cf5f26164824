//! The DDP face of settings: `public-settings/get`, `private-settings/get` (with or without
//! the "since" date), `saveSetting`, `saveSettings`.

use super::{Delta, Settings};
use crate::chat::call::Call;
use crate::chat::permissions::Permissions;
use crate::engine::args::{check_all, Pattern};
use crate::engine::error::ServiceError;
use crate::engine::registry::Registry;
use crate::model::{Document, MeteorError, Value};
use std::sync::Arc;

/// What a client sees of a setting.
fn view(doc: &Document) -> Value {
    let mut out = Document::default();
    for k in [
        "_id",
        "value",
        "editor",
        "enterprise",
        "invalidValue",
        "modules",
        "requiredOnWizard",
    ] {
        if let Some(v) = doc.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    Value::Object(out)
}

/// The answer of a get: the list, or `{update, remove}` for the "since" form.
pub fn answer(delta: Delta, since: bool) -> Value {
    let update = Value::Array(delta.update.iter().map(|d| view(d)).collect());
    if !since {
        return update;
    }
    let mut out = Document::default();
    out.insert("update".into(), update);
    out.insert(
        "remove".into(),
        Value::Array(delta.remove.into_iter().map(Value::Object).collect()),
    );
    Value::Object(out)
}

fn since(params: &[Value]) -> Option<f64> {
    match params.first() {
        Some(Value::Date(ms)) => Some(*ms),
        _ => None,
    }
}

fn action_not_allowed() -> ServiceError {
    ServiceError::Client(
        MeteorError::new(
            "error-action-not-allowed",
            "Editing settings is not allowed",
        )
        .with_details(serde_json::json!({"method": "saveSetting"})),
    )
}

pub fn register(registry: &mut Registry, settings: Arc<Settings>, permissions: Arc<Permissions>) {
    let permissions_for_settings = permissions;
    let s = settings.clone();
    registry.method("public-settings/get", move |_ctx, params| {
        let settings = s.clone();
        async move {
            check_all(&[Pattern::maybe(Pattern::DATE)], &params)?;
            let since = since(&params);
            Ok(Some(answer(
                settings.read(true, since).await?,
                since.is_some(),
            )))
        }
    });
    let (s, a) = (settings.clone(), permissions_for_settings.clone());
    registry.method("private-settings/get", move |ctx, params| {
        let (settings, permissions) = (s.clone(), a.clone());
        async move {
            check_all(&[Pattern::maybe(Pattern::DATE)], &params)?;
            let since = since(&params);
            if !permissions
                .has_permission(ctx.user_id.as_deref(), "view-privileged-setting", None)
                .await?
            {
                let empty = Delta {
                    update: Vec::new(),
                    remove: Vec::new(),
                };
                return Ok(Some(answer(empty, since.is_some())));
            }
            Ok(Some(answer(
                settings.read(false, since).await?,
                since.is_some(),
            )))
        }
    });
    let (s, a) = (settings.clone(), permissions_for_settings.clone());
    registry.method("saveSetting", move |ctx, params| {
        let (settings, permissions) = (s.clone(), a.clone());
        async move {
            check_all(
                &[
                    Pattern::string_up_to(256),
                    Pattern::ANY,
                    Pattern::maybe(Pattern::STRING),
                ],
                &params,
            )?;
            if !permissions
                .has_permission(ctx.user_id.as_deref(), "edit-privileged-setting", None)
                .await?
            {
                return Err(action_not_allowed());
            }
            let id = params[0].as_str().unwrap_or_default();
            settings
                .save(&Call::method(&ctx), id, params[1].clone())
                .await?;
            Ok(Some(Value::Bool(true)))
        }
    });
    let (s, a) = (settings, permissions_for_settings);
    registry.method("saveSettings", move |ctx, params| {
        let (settings, permissions) = (s.clone(), a.clone());
        async move {
            let change = Pattern::object_including(vec![
                ("_id", Pattern::string_up_to(256)),
                ("value", Pattern::ANY),
            ]);
            check_all(&[Pattern::array_of(change)], &params)?;
            if !permissions
                .has_permission(ctx.user_id.as_deref(), "edit-privileged-setting", None)
                .await?
            {
                return Err(action_not_allowed());
            }
            let Some(Value::Array(changes)) = params.first() else {
                return Err(ServiceError::match_failed());
            };
            for change in changes {
                let Some(d) = change.as_object() else {
                    continue;
                };
                let id = d.get("_id").and_then(Value::as_str).unwrap_or_default();
                let value = d.get("value").cloned().unwrap_or(Value::Null);
                settings.save(&Call::method(&ctx), id, value).await?;
            }
            Ok(Some(Value::Bool(true)))
        }
    });
}
