//! `/api/v1/plugins.*`: administrators list, install (a `.tar.gz`, as the body or as a
//! form's file), enable, disable, configure and remove server plugins; and the entry of a
//! plugin's own HTTP routes under `/plugins/<id>/`. Thin adapters over
//! [`Plugins`](crate::chat::plugins::Plugins), which checks `manage-apps`.

use super::chat::{params_missing, route, Chat, ChatRoute, Reply, Stop};
use super::{RestRequest, RestResponse};
use crate::chat::plugins::{HttpAnswer, HttpRequest};
use crate::model::Value;

pub(super) const ROUTES: &[ChatRoute] = &[
    route!(Get, "plugins.list", list),
    route!(Get, "plugins.get", get),
    route!(Post, "plugins.install", install),
    route!(Post, "plugins.enable", enable),
    route!(Post, "plugins.disable", disable),
    route!(Post, "plugins.remove", remove),
    route!(Post, "plugins.configure", configure),
];

/// Largest bundle taken.
const MAX_BUNDLE: usize = 64 << 20;

async fn list(c: &Chat<'_>) -> Reply {
    let plugins = c.services.plugins.list(&c.acting()).await?;
    Ok(RestResponse::success(
        serde_json::json!({"plugins": plugins}),
    ))
}

async fn get(c: &Chat<'_>) -> Reply {
    let Some(id) = c.q.get("id") else {
        return Ok(params_missing("id"));
    };
    let plugin = c.services.plugins.get_view(&c.acting(), id).await?;
    Ok(RestResponse::success(serde_json::json!({"plugin": plugin})))
}

fn too_large() -> RestResponse {
    RestResponse::failure(
        413,
        "The bundle is over 64 MiB",
        Some("error-file-too-large"),
    )
}

/// The bundle: a form's first file, or the whole body.
async fn bundle_of(request: &RestRequest) -> Result<Vec<u8>, Stop> {
    let multipart = request
        .content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("multipart/"));
    if multipart {
        let mut form = super::uploads::Form::of(request)?;
        while let Some(field) = form.next().await? {
            if field.file_name().is_some() {
                return Ok(super::uploads::part_bytes(field, MAX_BUNDLE, too_large).await?);
            }
        }
        return Err(
            RestResponse::failure(400, "No file in the form", Some("error-invalid-body")).into(),
        );
    }
    match request.take_stream() {
        Some(stream) => super::uploads::collect(stream, MAX_BUNDLE)
            .await
            .map(|b| b.to_vec())
            .map_err(|()| too_large().into()),
        None => Ok(request.body.to_vec()),
    }
}

async fn install(c: &Chat<'_>) -> Reply {
    // Who may install is checked before the bundle is read.
    c.services.plugins.list(&c.acting()).await?;
    let bytes = bundle_of(c.request).await?;
    if bytes.is_empty() {
        return Ok(params_missing("bundle"));
    }
    let plugin = c.services.plugins.install(&c.acting(), &bytes).await?;
    Ok(RestResponse::success(serde_json::json!({"plugin": plugin})))
}

fn id_field(c: &Chat<'_>) -> Result<String, Stop> {
    c.field("id")
        .or_else(|| c.field("pluginId"))
        .ok_or_else(|| params_missing("id").into())
}

async fn enable(c: &Chat<'_>) -> Reply {
    let id = id_field(c)?;
    let plugin = c.services.plugins.enable(&c.acting(), &id).await?;
    Ok(RestResponse::success(serde_json::json!({"plugin": plugin})))
}

async fn disable(c: &Chat<'_>) -> Reply {
    let id = id_field(c)?;
    let plugin = c.services.plugins.disable(&c.acting(), &id).await?;
    Ok(RestResponse::success(serde_json::json!({"plugin": plugin})))
}

async fn remove(c: &Chat<'_>) -> Reply {
    let id = id_field(c)?;
    c.services.plugins.remove(&c.acting(), &id).await?;
    Ok(RestResponse::success(serde_json::json!({})))
}

async fn configure(c: &Chat<'_>) -> Reply {
    let id = id_field(c)?;
    let Some(Value::Object(config)) = c.fields.get("config") else {
        return Ok(params_missing("config"));
    };
    let serde_json::Value::Object(values) = super::json::to_json(&Value::Object(config.clone()))
    else {
        return Ok(params_missing("config"));
    };
    let plugin = c
        .services
        .plugins
        .configure(&c.acting(), &id, &values)
        .await?;
    Ok(RestResponse::success(serde_json::json!({"plugin": plugin})))
}

/// A request under `/plugins/`, as the server read it.
#[derive(Debug, Default)]
pub struct PluginCall {
    pub method: String,
    /// The whole path: `/plugins/<id>/<rest>`.
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `X-User-Id` and `X-Auth-Token`, when both were sent.
    pub credentials: Option<(String, String)>,
}

impl super::Rest {
    /// A request under `/plugins/<id>/` for the plugin: the user id only when the
    /// credentials hold, and never the credentials themselves.
    pub async fn plugin_http(&self, call: PluginCall) -> HttpAnswer {
        let not_found = || HttpAnswer {
            status: 404,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: b"Not found".to_vec(),
        };
        let Some(services) = &self.services else {
            return not_found();
        };
        let tail = call.path.strip_prefix("/plugins/").unwrap_or_default();
        let (id, path) = match tail.split_once('/') {
            Some((id, rest)) => (id, format!("/{rest}")),
            None => (tail, "/".to_owned()),
        };
        if !crate::chat::plugins::manifest::valid_id(id) {
            return not_found();
        }
        let probe = RestRequest {
            credentials: call.credentials,
            ..Default::default()
        };
        let request = HttpRequest {
            method: call.method,
            path,
            query: call.query,
            headers: crate::chat::plugins::visible_headers(call.headers),
            body: call.body,
            user_id: self.caller(&probe).await.map(|c| c.user_id),
        };
        services.plugins.serve_http(id, request).await
    }
}
