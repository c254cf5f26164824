//! REST: Rocket.Chat's `/api` routes on the DDP port.
//!
//! Owns the route table, Rocket.Chat's JSON envelopes (`{success: true, ...}`, errors as
//! `{success: false, error, errorType}`) and the mapping of service errors to HTTP statuses.
//! Handlers are thin adapters over the services' typed APIs, so REST and DDP run the same
//! checks. It must not know about hyper or sockets: the server hands it a [`RestRequest`]
//! (body already read, bounded) and sends back the [`RestResponse`].

use std::sync::Arc;

/// One HTTP request as REST sees it.
#[derive(Debug, Default)]
pub struct RestRequest {
    pub method: RestMethod,
    /// The path, without the query string.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// `X-User-Id` and `X-Auth-Token`, when both were sent.
    pub credentials: Option<(String, String)>,
    pub body: bytes::Bytes,
    /// The client's address (for rate limits).
    pub client_address: Option<std::net::IpAddr>,
}

/// The HTTP methods REST routes answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestMethod {
    #[default]
    Get,
    Post,
    Put,
    Delete,
    Other,
}

/// What the server sends back: a status and a JSON body.
#[derive(Debug)]
pub struct RestResponse {
    pub status: u16,
    pub body: serde_json::Value,
}

impl RestResponse {
    /// `{success: true, ...fields}`, 200.
    pub fn success(fields: serde_json::Value) -> Self {
        let mut body = serde_json::json!({"success": true});
        if let (Some(out), serde_json::Value::Object(more)) = (body.as_object_mut(), fields) {
            for (k, v) in more {
                out.insert(k, v);
            }
        }
        Self { status: 200, body }
    }

    /// Rocket.Chat's failure envelope.
    pub fn failure(status: u16, error: &str, error_type: Option<&str>) -> Self {
        let mut body = serde_json::json!({"success": false, "error": error});
        if let (Some(out), Some(kind)) = (body.as_object_mut(), error_type) {
            out.insert("errorType".into(), kind.into());
        }
        Self { status, body }
    }
}

/// Which handler a path leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Info,
}

/// The REST layer: its routes and what their handlers need.
pub struct Rest {
    routes: matchit::Router<Route>,
    /// The Rocket.Chat version `/api/info` reports.
    rocketchat_version: Arc<str>,
}

impl Rest {
    pub fn new(rocketchat_version: &str) -> Self {
        let mut routes = matchit::Router::new();
        for (path, route) in [("/api/info", Route::Info)] {
            // The table is fixed: a conflict is a programming error caught by the tests.
            if let Err(err) = routes.insert(path, route) {
                tracing::error!(%path, cause = %err, "REST route not registered");
            }
        }
        Self {
            routes,
            rocketchat_version: rocketchat_version.into(),
        }
    }

    /// Whether `path` is REST's to answer.
    pub fn owns(path: &str) -> bool {
        path == "/api" || path.starts_with("/api/")
    }

    /// Answers one request.
    pub async fn handle(&self, request: RestRequest) -> RestResponse {
        let path = request.path.trim_end_matches('/');
        let Ok(found) = self.routes.at(path) else {
            return RestResponse::failure(404, "Not found", None);
        };
        match (*found.value, request.method) {
            (Route::Info, RestMethod::Get) => RestResponse::success(serde_json::json!({
                "version": &*self.rocketchat_version,
            })),
            _ => RestResponse::failure(405, "Method not allowed", None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> RestRequest {
        RestRequest {
            path: path.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn info_reports_the_version_and_unknown_paths_fail_in_rocketchat_shape() {
        let rest = Rest::new("7.0.0");
        let info = rest.handle(get("/api/info")).await;
        assert_eq!(info.status, 200);
        assert_eq!(
            info.body,
            serde_json::json!({"success": true, "version": "7.0.0"})
        );
        let missing = rest.handle(get("/api/v1/nope")).await;
        assert_eq!(missing.status, 404);
        assert_eq!(missing.body["success"], false);
        let wrong = rest
            .handle(RestRequest {
                method: RestMethod::Post,
                ..get("/api/info")
            })
            .await;
        assert_eq!(wrong.status, 405);
    }
}
