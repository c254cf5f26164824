//! REST: Rocket.Chat's `/api` routes on the DDP port.
//!
//! Owns the route table, Rocket.Chat's JSON envelopes (`{success: true, ...}`, errors as
//! `{success: false, error, errorType}`) and the mapping of service errors to HTTP statuses.
//! Handlers are thin adapters over the services' typed APIs, so REST and DDP run the same
//! checks. It must not know about hyper or sockets: the server hands it a [`RestRequest`]
//! (body already read, bounded) and sends back the [`RestResponse`].

mod accounts;
pub mod avatar;
mod chat;
pub mod json;
mod limits;
mod messages;
mod methods;
mod plugins;
pub use plugins::PluginCall;
mod presence;
mod rooms;
mod settings;
mod teams;
pub mod uploads;
mod users;
mod workspace;

use crate::chat::accounts::Accounts;
use crate::engine::{Registry, ServiceError};
use crate::model::MeteorError;
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
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The body as it arrives, for the routes that stream it ([`uploads::streams_body`]);
    /// `body` is then empty.
    pub stream: BodyStream,
}

/// A streamed body, taken once by the handler that reads it.
#[derive(Default)]
pub struct BodyStream(std::sync::Mutex<Option<uploads::BodyChunks>>);

impl BodyStream {
    pub fn new(chunks: uploads::BodyChunks) -> Self {
        Self(std::sync::Mutex::new(Some(chunks)))
    }
}

impl std::fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyStream")
    }
}

impl RestRequest {
    /// The streamed body, once.
    pub fn take_stream(&self) -> Option<uploads::BodyChunks> {
        self.stream
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
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
    /// Headers beside the content type (the rate limiter's).
    pub headers: Vec<(&'static str, String)>,
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
        Self {
            status: 200,
            body,
            headers: Vec::new(),
        }
    }

    /// Rocket.Chat's answer to a request without valid credentials.
    pub fn unauthorized() -> Self {
        Self {
            status: 401,
            body: serde_json::json!({"status": "error", "message": "You must be logged in to do this."}),
            headers: Vec::new(),
        }
    }

    /// A service's refusal in Rocket.Chat's envelope: its error code as `errorType`, its
    /// reason as `error`; 400 for a client's mistake, 403 for a refusal, 500 for ours.
    pub fn from_service(err: &ServiceError) -> Self {
        if let ServiceError::Internal(cause) = err {
            tracing::error!(%cause, "REST handler failed");
        }
        let shown: MeteorError = err.client_view();
        let code = shown.error.to_string();
        let status = match code.as_str() {
            "400" => 400,
            "401" => 401,
            "403" | "error-not-allowed" | "error-action-not-allowed" => 403,
            "404" => 404,
            "409" => 409,
            "error-file-too-large" => 413,
            "too-many-requests" => 429,
            "500" => 500,
            "503" => 503,
            _ => 400,
        };
        let reason = shown.reason.clone().unwrap_or_else(|| code.clone());
        Self::failure(status, &reason, Some(&code))
    }

    /// Rocket.Chat's failure envelope.
    pub fn failure(status: u16, error: &str, error_type: Option<&str>) -> Self {
        let mut body = serde_json::json!({"success": false, "error": error});
        if let (Some(out), Some(kind)) = (body.as_object_mut(), error_type) {
            out.insert("errorType".into(), kind.into());
        }
        Self {
            status,
            body,
            headers: Vec::new(),
        }
    }
}

/// A path segment with its `%XX` escapes decoded.
pub fn percent_decoded(text: &str) -> String {
    accounts::percent_decode(text)
}

/// Whether a page on another origin may read an answer (`API_Enable_CORS`,
/// `API_CORS_Origin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CorsAnswer {
    /// No cross-origin access (the default).
    Deny,
    /// Any origin (`API_CORS_Origin` is `*`), without credentials.
    AnyOrigin,
    /// The asking origin, which `API_CORS_Origin` lists.
    ThisOrigin,
}

/// Which handler a path leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Info,
    Login,
    Logout,
    Me,
    UsersRegister,
    UsersInfo,
    SettingsPublic,
    SettingsOauth,
    Setting,
    PermissionsListAll,
    MethodCall,
    MethodCallAnon,
    /// `chat.*`, `channels.*`, `groups.*`, `im.*`, `rooms.*`, `subscriptions.*`.
    Chat(&'static chat::ChatRoute),
    /// `teams.*`.
    Teams(&'static teams::TeamRoute),
    UsersPresence,
    UsersGetPresence,
    UsersSetStatus,
    RoomsUpload,
    RoomsMedia,
    RoomsMediaConfirm,
    UsersSetAvatar,
}

/// The REST layer: its routes and what their handlers need.
pub struct Rest {
    routes: matchit::Router<Route>,
    /// The Rocket.Chat version `/api/info` reports.
    rocketchat_version: Arc<str>,
    /// None for a REST layer without services (only `/api/info` answers).
    services: Option<RestServices>,
    limits: limits::RouteLimiter,
}

/// The services REST routes adapt.
pub struct RestServices {
    pub accounts: Arc<Accounts>,
    /// The method registry (`method.call`).
    pub registry: Arc<Registry>,
    pub settings: Arc<crate::chat::settings::Settings>,
    pub permissions: Arc<crate::chat::permissions::Permissions>,
    pub rooms: Arc<crate::chat::rooms::Rooms>,
    pub messages: Arc<crate::chat::messages::Messages>,
    pub presence: Arc<crate::chat::presence::Presence>,
    pub teams: Arc<crate::chat::teams::Teams>,
    pub emoji: Arc<crate::chat::emoji::CustomEmoji>,
    pub push: Arc<crate::chat::push::PushTokens>,
    pub commands: Arc<crate::chat::commands::Commands>,
    pub uploads: Arc<crate::chat::uploads::Uploads>,
    pub plugins: Arc<crate::chat::plugins::Plugins>,
}

/// What a route's path names.
struct PathParams {
    method: Option<String>,
    setting_id: Option<String>,
    rid: Option<String>,
    file_id: Option<String>,
}

/// The user a request's `X-User-Id` / `X-Auth-Token` prove, and the token's hash.
pub struct Caller {
    pub user: crate::model::Document,
    pub user_id: String,
    pub token_hash: String,
}

impl Rest {
    /// REST over the services.
    pub fn with_services(rocketchat_version: &str, services: RestServices) -> Self {
        let mut rest = Self::new(rocketchat_version);
        rest.services = Some(services);
        rest
    }

    pub fn new(rocketchat_version: &str) -> Self {
        let mut routes = matchit::Router::new();
        for (path, route) in [
            ("/api/info", Route::Info),
            ("/api/v1/login", Route::Login),
            ("/api/v1/logout", Route::Logout),
            ("/api/v1/me", Route::Me),
            ("/api/v1/users.register", Route::UsersRegister),
            ("/api/v1/users.info", Route::UsersInfo),
            ("/api/v1/settings.public", Route::SettingsPublic),
            ("/api/v1/settings.oauth", Route::SettingsOauth),
            ("/api/v1/settings/{id}", Route::Setting),
            ("/api/v1/permissions.listAll", Route::PermissionsListAll),
            ("/api/v1/method.call/{method}", Route::MethodCall),
            ("/api/v1/method.callAnon/{method}", Route::MethodCallAnon),
            ("/api/v1/users.presence", Route::UsersPresence),
            ("/api/v1/users.getPresence", Route::UsersGetPresence),
            ("/api/v1/users.setStatus", Route::UsersSetStatus),
            ("/api/v1/rooms.upload/{rid}", Route::RoomsUpload),
            ("/api/v1/rooms.media/{rid}", Route::RoomsMedia),
            (
                "/api/v1/rooms.mediaConfirm/{rid}/{fileId}",
                Route::RoomsMediaConfirm,
            ),
            ("/api/v1/users.setAvatar", Route::UsersSetAvatar),
        ] {
            // The table is fixed: a conflict is a programming error caught by the tests.
            if let Err(err) = routes.insert(path, route) {
                tracing::error!(%path, cause = %err, "REST route not registered");
            }
        }
        for route in chat::routes() {
            let path = format!("/api/v1/{}", route.name);
            if let Err(err) = routes.insert(path.clone(), Route::Chat(route)) {
                tracing::error!(%path, cause = %err, "REST route not registered");
            }
        }
        for route in teams::TEAM_ROUTES {
            let path = format!("/api/v1/{}", route.name);
            if let Err(err) = routes.insert(path.clone(), Route::Teams(route)) {
                tracing::error!(%path, cause = %err, "REST route not registered");
            }
        }
        Self {
            routes,
            rocketchat_version: rocketchat_version.into(),
            services: None,
            limits: limits::RouteLimiter::default(),
        }
    }

    /// Cross-origin access for a request from `origin`, as the settings say now.
    pub fn cors_for(&self, origin: Option<&str>) -> CorsAnswer {
        let (Some(services), Some(origin)) = (&self.services, origin) else {
            return CorsAnswer::Deny;
        };
        let settings = &services.settings;
        if !settings.flag("API_Enable_CORS", false) {
            return CorsAnswer::Deny;
        }
        let Some(crate::model::Value::String(allowed)) = settings.value("API_CORS_Origin") else {
            return CorsAnswer::Deny;
        };
        let listed: Vec<&str> = allowed
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .collect();
        if listed.contains(&"*") {
            CorsAnswer::AnyOrigin
        } else if listed
            .iter()
            .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
        {
            CorsAnswer::ThisOrigin
        } else {
            CorsAnswer::Deny
        }
    }

    /// Counts a request against its route's limit (none for `/api/info` and `method.call`,
    /// which the DDP limits cover); the refusal past it, else the headers to add.
    async fn count_request(
        &self,
        route: Route,
        request: &RestRequest,
        caller: Option<&Caller>,
    ) -> Result<Vec<(&'static str, String)>, RestResponse> {
        let (Some(services), Some(address)) = (&self.services, request.client_address) else {
            return Ok(Vec::new());
        };
        let settings = &services.settings;
        if matches!(
            route,
            Route::Info | Route::MethodCall | Route::MethodCallAnon
        ) || !settings.flag("API_Enable_Rate_Limiter", true)
        {
            return Ok(Vec::new());
        }
        let window = settings.number("API_Enable_Rate_Limiter_Limit_Time_Default", 60_000.0);
        let allowed = if route == Route::UsersRegister {
            settings.number("Rate_Limiter_Limit_RegisterUser", 1.0)
        } else {
            settings.number("API_Enable_Rate_Limiter_Limit_Calls_Default", 10.0)
        };
        // No count or no window: no limit, as Rocket.Chat adds no rule then.
        let Some(rule) = limits::RouteRule::from_numbers(allowed, window) else {
            return Ok(Vec::new());
        };
        if let Some(caller) = caller {
            if services
                .permissions
                .has_permission(Some(&caller.user_id), "api-bypass-rate-limit", None)
                .await
                .unwrap_or(false)
            {
                return Ok(Vec::new());
            }
        }
        let key = format!("{:?} {:?}", request.method, route);
        let counted = self.limits.count(&key, address, rule);
        let headers = counted.headers();
        if counted.allowed {
            return Ok(headers);
        }
        let seconds = counted.reset_in.as_millis().div_ceil(1000) as u64;
        let reason = format!(
            "Error, too many requests. Please slow down. You must wait {seconds} seconds before trying this endpoint again."
        );
        let mut refused = RestResponse::failure(429, &reason, Some("error-too-many-requests"));
        if let Some(body) = refused.body.as_object_mut() {
            body.insert(
                "details".into(),
                serde_json::json!({"timeToReset": counted.reset_in.as_millis() as u64, "seconds": seconds}),
            );
        }
        refused.headers = headers;
        Err(refused)
    }

    /// The caller the request's credentials prove, if they do.
    async fn caller(&self, request: &RestRequest) -> Option<Caller> {
        let accounts = &self.services.as_ref()?.accounts;
        let (user_id, token) = request.credentials.as_ref()?;
        let (user, _, token_hash) = accounts.user_for_token(token).await.ok()?;
        let id = user
            .get("_id")
            .and_then(crate::model::Value::as_str)?
            .to_owned();
        (id == *user_id).then_some(Caller {
            user,
            user_id: id,
            token_hash,
        })
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
        let route = *found.value;
        let params = PathParams {
            method: found.params.get("method").map(str::to_owned),
            setting_id: found.params.get("id").map(str::to_owned),
            rid: found.params.get("rid").map(percent_decoded),
            file_id: found.params.get("fileId").map(percent_decoded),
        };
        let caller = match request.credentials {
            Some(_) => self.caller(&request).await,
            None => None,
        };
        let limit_headers = match self.count_request(route, &request, caller.as_ref()).await {
            Ok(headers) => headers,
            Err(refused) => return refused,
        };
        let mut answer = self.answer(route, &params, caller.as_ref(), &request).await;
        answer.headers.extend(limit_headers);
        // A streamed body its handler never read (refused first): read a small one, so
        // the client reads the answer rather than a connection reset mid-send.
        if let Some(left) = request.take_stream() {
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                uploads::collect(left, uploads::DRAINED_AFTER_REFUSAL),
            )
            .await;
        }
        answer
    }

    /// The handler `route` leads to, with the caller the request's credentials prove.
    async fn answer(
        &self,
        route: Route,
        params: &PathParams,
        caller: Option<&Caller>,
        request: &RestRequest,
    ) -> RestResponse {
        let method_name = params.method.as_deref();
        let setting_id = params.setting_id.as_deref();
        let Some(s) = &self.services else {
            return match (route, request.method) {
                (Route::Info, RestMethod::Get) => self.info(),
                (Route::Info, _) => RestResponse::failure(405, "Method not allowed", None),
                _ => RestResponse::failure(404, "Not found", None),
            };
        };
        // The routes anyone may call.
        match (route, request.method) {
            (Route::Info, RestMethod::Get) => return self.info(),
            (Route::Login, RestMethod::Post) => return accounts::login(s, request).await,
            (Route::UsersRegister, RestMethod::Post) => {
                return accounts::register(&s.accounts, request).await
            }
            (Route::SettingsPublic, RestMethod::Get) => {
                return settings::public(&s.settings, request).await
            }
            (Route::SettingsOauth, RestMethod::Get) => return settings::oauth(),
            (Route::MethodCallAnon, RestMethod::Post) => {
                return methods::call(&s.registry, None, method_name, request).await
            }
            (
                Route::Info
                | Route::Login
                | Route::UsersRegister
                | Route::SettingsPublic
                | Route::SettingsOauth
                | Route::MethodCallAnon,
                _,
            ) => return RestResponse::failure(405, "Method not allowed", None),
            _ => {}
        }
        let Some(caller) = caller else {
            return RestResponse::unauthorized();
        };
        match (route, request.method) {
            (Route::Teams(name), _) => teams::handle(&s.teams, caller, request, name).await,
            (Route::Chat(route), _) => match chat::Chat::new(s, caller, request, route) {
                Ok(chat) => chat.handle(route).await,
                Err(refused) => refused,
            },
            (Route::Logout, RestMethod::Post) => accounts::logout(&s.accounts, caller).await,
            (Route::Me, RestMethod::Get) => accounts::me(s, caller),
            (Route::UsersInfo, RestMethod::Get) => {
                let see_full = s
                    .permissions
                    .has_permission(Some(&caller.user_id), "view-full-other-user-info", None)
                    .await
                    .unwrap_or(false);
                accounts::users_info(&s.accounts, caller, see_full, request).await
            }
            (Route::Setting, RestMethod::Get | RestMethod::Post) => {
                settings::one(s, caller, setting_id.unwrap_or(""), request).await
            }
            (Route::PermissionsListAll, RestMethod::Get) => {
                settings::permissions_list_all(&s.permissions)
            }
            (Route::UsersPresence, RestMethod::Get) => {
                presence::users_presence(&s.presence, request).await
            }
            (Route::UsersGetPresence, RestMethod::Get) => {
                presence::get_presence(&s.accounts, caller, request).await
            }
            (Route::UsersSetStatus, RestMethod::Post) => {
                presence::set_status(&s.accounts, &s.presence, caller, request).await
            }
            (Route::MethodCall, RestMethod::Post) => {
                methods::call(&s.registry, Some(caller), method_name, request).await
            }
            (Route::RoomsUpload | Route::RoomsMedia, RestMethod::Post) => {
                let purpose = if route == Route::RoomsUpload {
                    crate::chat::uploads::Purpose::Message
                } else {
                    crate::chat::uploads::Purpose::Temporary
                };
                let rid = params.rid.as_deref().unwrap_or_default();
                uploads::upload(s, caller, request, rid, purpose).await
            }
            (Route::RoomsMediaConfirm, RestMethod::Post) => {
                let rid = params.rid.as_deref().unwrap_or_default();
                let file_id = params.file_id.as_deref().unwrap_or_default();
                uploads::media_confirm(s, caller, request, rid, file_id).await
            }
            (Route::UsersSetAvatar, RestMethod::Post) => {
                uploads::set_avatar(s, caller, request).await
            }
            _ => RestResponse::failure(405, "Method not allowed", None),
        }
    }

    /// The avatar `username` gave (or with `of_room`, the room `username` names was
    /// given): its type, bytes and tag; `None` for the initials.
    pub async fn avatar(
        &self,
        username: &str,
        of_room: bool,
    ) -> Option<crate::chat::accounts::avatars::Avatar> {
        let services = self.services.as_ref()?;
        let found = if of_room {
            services
                .accounts
                .stored_avatar(&format!("room:{username}"))
                .await
        } else {
            services.accounts.avatar_of(username).await
        };
        match found {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(cause = %err.client_view().reason.unwrap_or_default(), "avatar not read");
                None
            }
        }
    }

    fn info(&self) -> RestResponse {
        RestResponse::success(serde_json::json!({"version": &*self.rocketchat_version}))
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

    #[test]
    fn every_route_of_the_tables_is_served_at_its_own_path() {
        let rest = Rest::new("7.0.0");
        let mut seen = std::collections::HashSet::new();
        let names = chat::routes()
            .map(|r| r.name)
            .chain(teams::TEAM_ROUTES.iter().map(|r| r.name));
        for name in names {
            assert!(seen.insert(name), "{name} is in the tables twice");
            let path = format!("/api/v1/{name}");
            let found = rest.routes.at(&path).map(|m| *m.value);
            match found {
                Ok(Route::Chat(route)) => assert_eq!(route.name, name),
                Ok(Route::Teams(route)) => assert_eq!(route.name, name),
                other => panic!("{path} routes to {other:?}"),
            }
        }
        assert!(seen.len() > 50, "only {} routes", seen.len());
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
