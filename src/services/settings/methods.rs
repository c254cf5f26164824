//! The DDP face of settings: `public-settings/get`, `private-settings/get` (with or without
//! the "since" date), `saveSetting`, `saveSettings`.

use super::{Delta, Settings};
use crate::model::{Document, MeteorError, Value};
use crate::services::accounts::{Accounts, UserSelector};
use crate::services::args::{check_all, Pattern};
use crate::services::error::ServiceError;
use crate::services::registry::Registry;
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

/// Whether the user may see and change privileged settings (the administrator's role; the
/// full permission model refines this).
pub async fn may_manage_settings(
    accounts: &Accounts,
    user: Option<&str>,
) -> Result<bool, ServiceError> {
    let Some(user) = user else { return Ok(false) };
    let Some(doc) = accounts
        .find_user(&UserSelector::Id(user.to_owned()))
        .await?
    else {
        return Ok(false);
    };
    Ok(
        matches!(doc.get("roles"), Some(Value::Array(roles)) if roles.iter().any(|r| r.as_str() == Some("admin"))),
    )
}

fn not_allowed() -> ServiceError {
    ServiceError::Client(
        MeteorError::new(
            "error-action-not-allowed",
            "Editing settings is not allowed",
        )
        .with_details(serde_json::json!({"method": "saveSetting"})),
    )
}

pub fn register(registry: &mut Registry, settings: Arc<Settings>, accounts: Arc<Accounts>) {
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
    let (s, a) = (settings.clone(), accounts.clone());
    registry.method("private-settings/get", move |ctx, params| {
        let (settings, accounts) = (s.clone(), a.clone());
        async move {
            check_all(&[Pattern::maybe(Pattern::DATE)], &params)?;
            let since = since(&params);
            if !may_manage_settings(&accounts, ctx.user_id.as_deref()).await? {
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
    let (s, a) = (settings.clone(), accounts.clone());
    registry.method("saveSetting", move |ctx, params| {
        let (settings, accounts) = (s.clone(), a.clone());
        async move {
            check_all(
                &[
                    Pattern::string_up_to(256),
                    Pattern::ANY,
                    Pattern::maybe(Pattern::STRING),
                ],
                &params,
            )?;
            if !may_manage_settings(&accounts, ctx.user_id.as_deref()).await? {
                return Err(not_allowed());
            }
            let id = params[0].as_str().unwrap_or_default();
            settings.save(id, params[1].clone(), &ctx).await?;
            Ok(Some(Value::Bool(true)))
        }
    });
    let (s, a) = (settings, accounts);
    registry.method("saveSettings", move |ctx, params| {
        let (settings, accounts) = (s.clone(), a.clone());
        async move {
            let change = Pattern::object_including(vec![
                ("_id", Pattern::string_up_to(256)),
                ("value", Pattern::ANY),
            ]);
            check_all(&[Pattern::array_of(change)], &params)?;
            if !may_manage_settings(&accounts, ctx.user_id.as_deref()).await? {
                return Err(not_allowed());
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
                settings.save(id, value, &ctx).await?;
            }
            Ok(Some(Value::Bool(true)))
        }
    });
}
