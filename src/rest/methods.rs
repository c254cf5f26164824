//! `method.call/:method` and `method.callAnon/:method`: any DDP method for a REST client,
//! as Rocket.Chat runs them. The body is `{message: "<EJSON DDP method frame>"}`; the answer
//! is `{success: true, message: "<EJSON result frame>"}`, whether the method returned or
//! failed (as on a socket, the failure is inside the frame).

use super::accounts::body;
use super::{Caller, RestRequest, RestResponse};
use crate::engine::rate_limit::{Call, CallKind};
use crate::engine::{MethodContext, Registry, ServiceError};
use crate::model::{MeteorError, Value};
use futures_util::FutureExt as _;
use std::panic::AssertUnwindSafe;

/// Runs the method the body's frame names, as `caller` (or nobody, for `callAnon`).
pub(super) async fn call(
    registry: &Registry,
    caller: Option<&Caller>,
    path_method: Option<&str>,
    request: &RestRequest,
) -> RestResponse {
    let invalid =
        || RestResponse::failure(400, "Invalid method call", Some("error-invalid-params"));
    let fields = match body(request) {
        Ok(d) => d,
        Err(refused) => return refused,
    };
    let Some(Value::String(message)) = fields.get("message") else {
        return invalid();
    };
    let Ok(serde_json::Value::Object(frame)) = serde_json::from_str::<serde_json::Value>(message)
    else {
        return invalid();
    };
    let method = frame.get("method").and_then(serde_json::Value::as_str);
    let id = frame
        .get("id")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    if frame.get("msg").and_then(serde_json::Value::as_str) != Some("method")
        || method.is_none()
        || method != path_method
    {
        return invalid();
    }
    let params = match frame.get("params").cloned().map(Value::from_json) {
        None => Vec::new(),
        Some(Ok(Value::Array(items))) => items,
        Some(_) => return invalid(),
    };
    let name = method.unwrap_or_default();
    let outcome = run(registry, caller, request.client_address, name, params).await;
    let mut frame_text = String::from("{\"msg\":\"result\",\"id\":");
    crate::model::value::write_str(id, &mut frame_text);
    match outcome {
        Ok(Some(value)) => {
            frame_text.push_str(",\"result\":");
            crate::model::value::write_ejson(&value, &mut frame_text);
        }
        Ok(None) => {}
        Err(err) => {
            if let ServiceError::Internal(cause) = &err {
                tracing::error!(method = %name, %cause, "method failed (REST)");
            }
            frame_text.push_str(",\"error\":");
            err.client_view().write_json(&mut frame_text);
        }
    }
    frame_text.push('}');
    RestResponse::success(serde_json::json!({"message": frame_text}))
}

/// Runs the DDP method `name` with `params` as `caller` (or nobody): what REST routes that
/// stand for a method call, so both paths run the same checks.
pub(super) async fn run(
    registry: &Registry,
    caller: Option<&Caller>,
    address: Option<std::net::IpAddr>,
    name: &str,
    params: Vec<Value>,
) -> Result<Option<Value>, ServiceError> {
    match registry.find_method(name) {
        None => Err(ServiceError::Client(MeteorError::new(
            404,
            format!("Method '{name}' not found"),
        ))),
        Some(handler) => {
            // Each request is a connection of its own, as Rocket.Chat counts them; the rules
            // per address and per user apply across requests.
            let connection_id: std::sync::Arc<str> =
                format!("rest-{}", crate::model::random::random_id()).into();
            let user_id = caller.map(|c| c.user_id.clone());
            registry.call_limits().check(&Call {
                kind: CallKind::Method,
                name,
                user_id: user_id.as_deref(),
                connection_id: &connection_id,
                address,
            })?;
            let (unblock, _) = tokio::sync::oneshot::channel();
            let ctx = MethodContext::new(user_id, connection_id, None, unblock)
                .with_client_address(address);
            match AssertUnwindSafe(handler(ctx, params)).catch_unwind().await {
                Ok(result) => result,
                Err(_) => Err(ServiceError::internal(format!("method {name} panicked"))),
            }
        }
    }
}
