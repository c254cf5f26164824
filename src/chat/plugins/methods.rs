//! The Plugins service's DDP methods, for administrators (`manage-apps`):
//! `plugins.list()`, `plugins.get(id)`, `plugins.install(bundle)` (the `.tar.gz` as EJSON
//! binary), `plugins.enable(id)`, `plugins.disable(id)`, `plugins.remove(id)`,
//! `plugins.configure(id, values)`. Adapters only: arguments checked, then the service.

use super::Plugins;
use crate::chat::call::Call;
use crate::engine::args::{check_all, Pattern};
use crate::engine::build::to_json;
use crate::engine::registry::Registry;
use crate::engine::ServiceError;
use crate::model::Value;
use std::sync::Arc;

const MAX_ID: usize = 64;

fn id_of(params: &[Value]) -> Result<String, ServiceError> {
    check_all(&[Pattern::string_up_to(MAX_ID)], params)?;
    Ok(params
        .first()
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned())
}

fn answer(json: serde_json::Value) -> Option<Value> {
    Value::from_json(json).ok()
}

pub fn register(registry: &mut Registry, plugins: &Arc<Plugins>) {
    registry.method_of("plugins.list", plugins, |plugins, ctx, params| async move {
        check_all(&[], &params)?;
        let list = plugins.list(&Call::method(&ctx)).await?;
        Ok(answer(serde_json::Value::Array(list)))
    });
    registry.method_of("plugins.get", plugins, |plugins, ctx, params| async move {
        let id = id_of(&params)?;
        Ok(answer(plugins.get_view(&Call::method(&ctx), &id).await?))
    });
    registry.method_of(
        "plugins.install",
        plugins,
        |plugins, ctx, params| async move {
            check_all(&[Pattern::ANY], &params)?;
            let Some(Value::Binary { bytes, .. }) = params.first() else {
                return Err(ServiceError::match_failed());
            };
            Ok(answer(plugins.install(&Call::method(&ctx), bytes).await?))
        },
    );
    registry.method_of(
        "plugins.enable",
        plugins,
        |plugins, ctx, params| async move {
            let id = id_of(&params)?;
            Ok(answer(plugins.enable(&Call::method(&ctx), &id).await?))
        },
    );
    registry.method_of(
        "plugins.disable",
        plugins,
        |plugins, ctx, params| async move {
            let id = id_of(&params)?;
            Ok(answer(plugins.disable(&Call::method(&ctx), &id).await?))
        },
    );
    registry.method_of(
        "plugins.remove",
        plugins,
        |plugins, ctx, params| async move {
            let id = id_of(&params)?;
            plugins.remove(&Call::method(&ctx), &id).await?;
            Ok(Some(Value::Bool(true)))
        },
    );
    registry.method_of(
        "plugins.configure",
        plugins,
        |plugins, ctx, params| async move {
            check_all(&[Pattern::string_up_to(MAX_ID), Pattern::OBJECT], &params)?;
            let id = params.first().and_then(Value::as_str).unwrap_or_default();
            let serde_json::Value::Object(values) = params.get(1).map(to_json).unwrap_or_default()
            else {
                return Err(ServiceError::match_failed());
            };
            Ok(answer(
                plugins.configure(&Call::method(&ctx), id, &values).await?,
            ))
        },
    );
}
