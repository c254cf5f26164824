//! Files over REST: `rooms.upload`, `rooms.media` + `rooms.mediaConfirm`, the `*.files`
//! lists, `users.setAvatar`, and the reading of `/file-upload/<id>/<name>`.
//!
//! Upload bodies arrive as a stream (the server does not read them first): the multipart
//! form is parsed as it comes and the file part goes straight to the Upload service's one
//! path, which bounds its size and decides its type. Text parts are bounded here. Reads
//! take credentials from Rocket.Chat's `rc_uid` / `rc_token` (query or cookies) or the
//! `X-User-Id` / `X-Auth-Token` headers; a query's credentials are never logged (the
//! server logs no query string). It must not know about hyper: the server hands over a
//! stream of chunks and sends the [`Download`] back.

use super::chat::{doc_json, route, Chat, ChatRoute, Reply, MAX_COUNT};
use super::{Caller, RestRequest, RestResponse, RestServices};
use crate::chat::call::Call;
use crate::chat::uploads::{FileMessage, FilesFilter, Incoming, Purpose, Readable};
use crate::engine::ServiceError;
use crate::model::Value;
use crate::storage::files::ByteStream;
use bytes::Bytes;
use futures_util::StreamExt as _;

/// The `*.files` routes.
pub(super) const ROUTES: &[ChatRoute] = &[
    route!(Get, "channels.files", files),
    route!(Get, "groups.files", files),
    route!(Get, "im.files", files),
    route!(Get, "dm.files", files),
];

/// The most bytes one text part of a form may hold.
const MAX_TEXT_PART: usize = 64 * 1024;
/// The most parts one form may have.
const MAX_PARTS: usize = 32;
/// What is read of a body after it was refused, so the client gets to read the answer.
pub const DRAINED_AFTER_REFUSAL: usize = 1024 * 1024;

/// `channels.files` / `groups.files` / `im.files`: a room's files, newest first, paged;
/// `name` (matched literally) and `typeGroup` narrow them; `sort` may be `{"name": 1}`.
async fn files(c: &Chat<'_>) -> Reply {
    let room = c.room().await?;
    let rid = room.get("_id").and_then(Value::as_str).unwrap_or_default();
    let mut name = c.q.get("name").cloned();
    let mut type_group = c.q.get("typeGroup").cloned();
    // Rocket.Chat's clients also send `query={"name": {"$regex": ...}}`: only a plain
    // name or type group is read from it, never an operator.
    if let Some(query) = c.q.get("query") {
        let parsed: serde_json::Value = serde_json::from_str(query).map_err(|_| {
            RestResponse::failure(400, "Invalid query parameter", Some("error-invalid-query"))
        })?;
        if let Some(n) = parsed.get("name") {
            name = n
                .as_str()
                .or_else(|| n.get("$regex").and_then(|r| r.as_str()))
                .map(str::to_owned);
        }
        if let Some(g) = parsed.get("typeGroup").and_then(|g| g.as_str()) {
            type_group = Some(g.to_owned());
        }
    }
    let by_name =
        c.q.get("sort")
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
            .is_some_and(|s| s.get("name").is_some());
    let offset = c.q.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    let count =
        c.q.get("count")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(25)
            .min(MAX_COUNT);
    let (found, total) = c
        .services
        .uploads
        .files_of(
            &c.acting(),
            rid,
            FilesFilter {
                name,
                type_group,
                by_name,
                offset,
                count,
            },
        )
        .await?;
    let shown: Vec<serde_json::Value> = found.iter().map(doc_json).collect();
    Ok(RestResponse::success(serde_json::json!({
        "files": shown, "count": shown.len(), "offset": offset, "total": total,
    })))
}

/// A multipart form as it arrives.
pub(super) struct Form {
    parts: multer::Multipart<'static>,
    seen: usize,
}

impl Form {
    /// The request's form; a refusal when it is not one.
    pub(super) fn of(request: &RestRequest) -> Result<Self, RestResponse> {
        let boundary = request
            .content_type
            .as_deref()
            .and_then(|t| multer::parse_boundary(t).ok())
            .ok_or_else(|| {
                RestResponse::failure(
                    400,
                    "A multipart/form-data body is required",
                    Some("error-invalid-body"),
                )
            })?;
        let stream = request.take_stream().ok_or_else(|| {
            RestResponse::failure(400, "The body was already read", Some("error-invalid-body"))
        })?;
        let stream = stream.map(|r| r.map_err(std::io::Error::other));
        Ok(Self {
            parts: multer::Multipart::new(stream, boundary),
            seen: 0,
        })
    }

    /// Reads and drops what is left of the form, up to `cap` bytes.
    async fn drain(&mut self, cap: usize) {
        let mut read = 0;
        while let Ok(Some(mut field)) = self.parts.next_field().await {
            while let Ok(Some(chunk)) = field.chunk().await {
                read += chunk.len();
                if read > cap {
                    return;
                }
            }
        }
    }

    /// The next part, or none at the end.
    pub(super) async fn next(&mut self) -> Result<Option<multer::Field<'static>>, RestResponse> {
        self.seen += 1;
        if self.seen > MAX_PARTS {
            return Err(RestResponse::failure(
                400,
                "Too many form parts",
                Some("error-invalid-body"),
            ));
        }
        self.parts.next_field().await.map_err(|e| {
            tracing::debug!(err = %e, "unreadable form");
            RestResponse::failure(
                400,
                "The form could not be read",
                Some("error-invalid-body"),
            )
        })
    }
}

/// A part's whole bytes, at most `limit`; `too_long()` beyond.
pub(super) async fn part_bytes(
    mut field: multer::Field<'static>,
    limit: usize,
    too_long: impl FnOnce() -> RestResponse,
) -> Result<Vec<u8>, RestResponse> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|_| {
        RestResponse::failure(
            400,
            "The form could not be read",
            Some("error-invalid-body"),
        )
    })? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > limit {
            return Err(too_long());
        }
    }
    Ok(bytes)
}

/// A text part, bounded.
async fn text_part(field: multer::Field<'static>) -> Result<String, RestResponse> {
    let bytes = part_bytes(field, MAX_TEXT_PART, || {
        RestResponse::failure(400, "A form field is too long", Some("error-invalid-body"))
    })
    .await?;
    String::from_utf8(bytes).map_err(|_| {
        RestResponse::failure(
            400,
            "A form field is not UTF-8 text",
            Some("error-invalid-body"),
        )
    })
}

fn incoming(field: multer::Field<'static>) -> Incoming<'static> {
    let name = field.file_name().unwrap_or("file").to_owned();
    let claimed_type = field
        .content_type()
        .map(|m| m.essence_str().to_owned())
        .unwrap_or_default();
    Incoming {
        name,
        claimed_type,
        chunks: field.map(|r| r.map_err(|e| e.to_string())).boxed(),
    }
}

fn acting<'a>(caller: &'a Caller, request: &RestRequest) -> Call<'a> {
    Call::unfenced(Some(caller.user_id.as_str())).from_address(request.client_address)
}

fn answer_error(err: &ServiceError) -> RestResponse {
    RestResponse::from_service(err)
}

/// The message options a form or body carries.
fn message_options(fields: &[(String, String)]) -> FileMessage {
    let get = |k: &str| {
        fields
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    FileMessage {
        msg: get("msg").unwrap_or_default(),
        description: get("description"),
        tmid: get("tmid").filter(|t| !t.is_empty()),
        tshow: get("tshow").is_some_and(|t| t == "true"),
        alias: get("alias"),
        emoji: get("emoji"),
        avatar: get("avatar"),
        groupable: get("groupable").map(|g| g == "true"),
        custom_fields: None,
        file_name: get("fileName"),
    }
}

/// `rooms.upload/<rid>` (one step: the file and its message) and `rooms.media/<rid>` (the
/// file alone, confirmed later).
pub(super) async fn upload(
    s: &RestServices,
    caller: &Caller,
    request: &RestRequest,
    rid: &str,
    purpose: Purpose,
) -> RestResponse {
    let call = acting(caller, request);
    // Refused before a byte of the body is read (the REST layer then drains a small body,
    // so the client reads the answer rather than a reset connection).
    if let Err(err) = s.uploads.may_upload_to(&call, rid).await {
        return answer_error(&err);
    }
    let mut form = match Form::of(request) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let mut stored = None;
    let mut fields: Vec<(String, String)> = Vec::new();
    loop {
        let field = match form.next().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(refused) => {
                discard(s, &call, stored.as_ref()).await;
                return refused;
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" && stored.is_none() && field.file_name().is_some() {
            match s
                .uploads
                .receive(&call, rid, incoming(field), purpose)
                .await
            {
                Ok(record) => stored = Some(record),
                Err(err) => {
                    // A refused type is known from the first bytes: what follows of a
                    // small body is read so the client sees the answer. An oversized
                    // body is answered at once.
                    if err.client_view().error.to_string() != "error-file-too-large" {
                        form.drain(DRAINED_AFTER_REFUSAL).await;
                    }
                    return answer_error(&err);
                }
            }
        } else {
            match text_part(field).await {
                Ok(text) => fields.push((name, text)),
                Err(refused) => {
                    discard(s, &call, stored.as_ref()).await;
                    return refused;
                }
            }
        }
    }
    let Some(record) = stored else {
        return RestResponse::failure(400, "No file was uploaded", Some("error-no-file-uploaded"));
    };
    let id = record
        .get("_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match purpose {
        Purpose::Temporary => RestResponse::success(serde_json::json!({
            "file": {"_id": id, "url": record.get("path").and_then(Value::as_str)},
        })),
        Purpose::Message => {
            match s
                .uploads
                .send_file_message(&call, rid, &id, message_options(&fields))
                .await
            {
                Ok(message) => {
                    RestResponse::success(serde_json::json!({"message": doc_json(&message)}))
                }
                Err(err) => {
                    discard(s, &call, Some(&record)).await;
                    answer_error(&err)
                }
            }
        }
    }
}

async fn discard(s: &RestServices, call: &Call<'_>, record: Option<&crate::model::Document>) {
    if let Some(id) = record.and_then(|r| r.get("_id")).and_then(Value::as_str) {
        s.uploads.discard(call, id).await;
    }
}

/// `rooms.mediaConfirm/<rid>/<fileId>`: the message of a file `rooms.media` received.
pub(super) async fn media_confirm(
    s: &RestServices,
    caller: &Caller,
    request: &RestRequest,
    rid: &str,
    file_id: &str,
) -> RestResponse {
    let body = match super::accounts::body(request) {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let options = FileMessage {
        msg: text("msg").unwrap_or_default(),
        description: text("description"),
        tmid: text("tmid").filter(|t| !t.is_empty()),
        tshow: body.get("tshow") == Some(&Value::Bool(true)),
        alias: text("alias"),
        emoji: text("emoji"),
        avatar: text("avatar"),
        groupable: match body.get("groupable") {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        },
        custom_fields: body
            .get("customFields")
            .filter(|v| matches!(v, Value::Object(_)))
            .cloned(),
        file_name: text("fileName"),
    };
    match s
        .uploads
        .send_file_message(&acting(caller, request), rid, file_id, options)
        .await
    {
        Ok(message) => RestResponse::success(serde_json::json!({"message": doc_json(&message)})),
        Err(err) => answer_error(&err),
    }
}

/// `users.setAvatar`: the caller's avatar from a form's `image` part (or, for an
/// administrator with `edit-other-user-avatar`, another user's named by `userId` or
/// `username`).
pub(super) async fn set_avatar(
    s: &RestServices,
    caller: &Caller,
    request: &RestRequest,
) -> RestResponse {
    let call = acting(caller, request);
    let is_form = request
        .content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("multipart/form-data"));
    let may_edit_others = s
        .permissions
        .has_permission(Some(&caller.user_id), "edit-other-user-avatar", None)
        .await
        .unwrap_or(false);
    if !is_form {
        // `{avatarUrl}` (with `userId` or `username` for another user's): a picture
        // fetched from elsewhere.
        let body = match request.take_stream() {
            Some(chunks) => match collect(chunks, 64 * 1024).await {
                Ok(body) => body,
                Err(()) => {
                    return RestResponse::failure(
                        400,
                        "The body is too large",
                        Some("error-invalid-body"),
                    )
                }
            },
            None => request.body.clone(),
        };
        let Ok(serde_json::Value::Object(fields)) =
            serde_json::from_slice::<serde_json::Value>(&body)
        else {
            return RestResponse::failure(
                400,
                "A JSON object or a multipart form is required",
                Some("error-invalid-body"),
            );
        };
        let Some(url) = fields.get("avatarUrl").and_then(|u| u.as_str()) else {
            return RestResponse::failure(
                400,
                "The parameter \"avatarUrl\" is required",
                Some("error-invalid-params"),
            );
        };
        let bytes = match crate::chat::media::remote::fetch(
            url,
            crate::chat::accounts::avatars::MAX_AVATAR_BYTES,
        )
        .await
        {
            Ok(bytes) => bytes,
            Err(err) => return answer_error(&err),
        };
        let owner = owner_named(
            fields.get("userId").and_then(|v| v.as_str()),
            fields.get("username").and_then(|v| v.as_str()),
        );
        return match s
            .accounts
            .set_avatar_image(&call, owner, may_edit_others, bytes, "url")
            .await
        {
            Ok(()) => RestResponse::success(serde_json::json!({})),
            Err(err) => answer_error(&err),
        };
    }
    let mut form = match Form::of(request) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let mut image = None;
    let mut fields: Vec<(String, String)> = Vec::new();
    loop {
        let mut field = match form.next().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(refused) => return refused,
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == "image" && image.is_none() {
            let mut bytes = Vec::new();
            loop {
                match field.chunk().await {
                    Ok(Some(chunk)) => {
                        bytes.extend_from_slice(&chunk);
                        if bytes.len() > crate::chat::accounts::avatars::MAX_AVATAR_BYTES {
                            return RestResponse::failure(
                                413,
                                "The avatar is too large",
                                Some("error-file-too-large"),
                            );
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        return RestResponse::failure(
                            400,
                            "The form could not be read",
                            Some("error-invalid-body"),
                        )
                    }
                }
            }
            image = Some(bytes);
        } else {
            match text_part(field).await {
                Ok(text) => fields.push((name, text)),
                Err(refused) => return refused,
            }
        }
    }
    let Some(image) = image else {
        return RestResponse::failure(400, "No image was uploaded", Some("error-no-file-uploaded"));
    };
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let target = owner_named(get("userId"), get("username"));
    match s
        .accounts
        .set_avatar_image(&call, target, may_edit_others, image, "upload")
        .await
    {
        Ok(()) => RestResponse::success(serde_json::json!({})),
        Err(err) => answer_error(&err),
    }
}

/// Whose avatar a `users.setAvatar` names, if anyone's.
fn owner_named(
    user_id: Option<&str>,
    username: Option<&str>,
) -> Option<crate::chat::accounts::avatars::AvatarOwner> {
    use crate::chat::accounts::avatars::AvatarOwner;
    match (user_id, username) {
        (Some(id), _) => Some(AvatarOwner::Id(id.to_owned())),
        (None, Some(name)) => Some(AvatarOwner::Username(name.to_owned())),
        _ => None,
    }
}

/// A request to read `/file-upload/<id>/<name>`.
#[derive(Debug, Default)]
pub struct DownloadRequest {
    pub path: String,
    pub query: Option<String>,
    pub cookies: Option<String>,
    /// `X-User-Id` / `X-Auth-Token`.
    pub credentials: Option<(String, String)>,
    pub range: Option<String>,
    pub if_none_match: Option<String>,
}

/// What the server sends for a file.
pub enum Download {
    /// A refusal with its status and text.
    Refused(u16, &'static str),
    /// The file has not changed (`If-None-Match`).
    NotModified { etag: String },
    /// Read it from the bucket.
    Redirect(String),
    /// A range past the end: 416 with the size.
    Unsatisfiable { size: u64 },
    /// The bytes (200, or 206 for a range).
    Content {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: ByteStream,
    },
}

/// Types shown in the browser; everything else is downloaded.
fn shown_inline(content_type: &str) -> bool {
    matches!(
        content_type,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp" | "application/pdf"
    ) || content_type.starts_with("audio/")
        || content_type.starts_with("video/")
}

/// A `Range: bytes=...` header of one range, as the range of a `size`-byte file; `Err` for
/// one past the end, `Ok(None)` for none (or one this reader does not serve: the whole
/// file is sent).
fn byte_range(header: Option<&str>, size: u64) -> Result<Option<std::ops::Range<u64>>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((from, to)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (from, to) = (from.trim(), to.trim());
    let range = if from.is_empty() {
        let Ok(suffix) = to.parse::<u64>() else {
            return Ok(None);
        };
        if suffix == 0 {
            return Err(());
        }
        size.saturating_sub(suffix)..size
    } else {
        let Ok(start) = from.parse::<u64>() else {
            return Ok(None);
        };
        let end = if to.is_empty() {
            size
        } else {
            match to.parse::<u64>() {
                Ok(last) if last >= start => (last + 1).min(size),
                _ => return Ok(None),
            }
        };
        start..end
    };
    if range.start >= size {
        return Err(());
    }
    Ok(Some(range))
}

/// `Content-Disposition` with the name both plain (ASCII, quoted safely) and in RFC 5987
/// form.
fn disposition(kind: &str, name: &str) -> String {
    let plain: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = crate::chat::percent_encoded(name);
    format!("{kind}; filename=\"{plain}\"; filename*=UTF-8''{encoded}")
}

fn pairs(text: Option<&str>, separator: char) -> Vec<(String, String)> {
    text.unwrap_or_default()
        .split(separator)
        .filter_map(|p| p.trim().split_once('='))
        .map(|(k, v)| (super::percent_decoded(k), super::percent_decoded(v)))
        .collect()
}

impl super::Rest {
    /// Answers a read of `/file-upload/<id>/<name>`.
    pub async fn download(&self, request: DownloadRequest) -> Download {
        let Some(s) = &self.services else {
            return Download::Refused(404, "Not found");
        };
        let Some(id) = request
            .path
            .strip_prefix("/file-upload/")
            .and_then(|rest| rest.split('/').next())
            .filter(|id| !id.is_empty())
        else {
            return Download::Refused(404, "Not found");
        };
        let query = pairs(request.query.as_deref(), '&');
        let cookies = pairs(request.cookies.as_deref(), ';');
        let from = |list: &[(String, String)], k: &str| {
            list.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        let credentials = match (from(&query, "rc_uid"), from(&query, "rc_token")) {
            (Some(uid), Some(token)) => Some((uid, token)),
            _ => match (from(&cookies, "rc_uid"), from(&cookies, "rc_token")) {
                (Some(uid), Some(token)) => Some((uid, token)),
                _ => request.credentials.clone(),
            },
        };
        let caller = match credentials {
            Some(credentials) => {
                let probe = RestRequest {
                    credentials: Some(credentials),
                    ..RestRequest::default()
                };
                self.caller(&probe).await
            }
            None => None,
        };
        let readable: Readable = match s
            .uploads
            .open(caller.as_ref().map(|c| c.user_id.as_str()), id)
            .await
        {
            Ok(readable) => readable,
            Err(err) => {
                let code = err.client_view().error.to_string();
                return match code.as_str() {
                    "401" => Download::Refused(401, "Unauthorized"),
                    "403" | "error-file-not-found" => Download::Refused(403, "Forbidden"),
                    _ => Download::Refused(500, "The file cannot be read now"),
                };
            }
        };
        let etag = format!("\"{}\"", readable.etag);
        if request
            .if_none_match
            .as_deref()
            .is_some_and(|held| held.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
        {
            return Download::NotModified { etag };
        }
        if let Some(url) = readable.redirect().await {
            return Download::Redirect(url);
        }
        let Ok(range) = byte_range(request.range.as_deref(), readable.size) else {
            return Download::Unsatisfiable {
                size: readable.size,
            };
        };
        let body = match readable.read(range.clone()).await {
            Ok(body) => body,
            Err(err) => {
                tracing::warn!(file = %readable.id, err = %err.client_view().reason.unwrap_or_default(), "a file cannot be read");
                return Download::Refused(404, "Not found");
            }
        };
        let forced_download = query.iter().any(|(k, _)| k == "download");
        let kind = if shown_inline(&readable.content_type) && !forced_download {
            "inline"
        } else {
            "attachment"
        };
        let mut headers = vec![
            ("content-type", readable.content_type.clone()),
            ("content-disposition", disposition(kind, &readable.name)),
            ("x-content-type-options", "nosniff".to_owned()),
            // Nothing a file holds may run or load anything, whatever its type.
            ("content-security-policy", "default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'; sandbox".to_owned()),
            ("etag", etag),
            ("accept-ranges", "bytes".to_owned()),
            ("cache-control", "private, max-age=31536000".to_owned()),
        ];
        let status = match &range {
            Some(r) => {
                headers.push((
                    "content-range",
                    format!("bytes {}-{}/{}", r.start, r.end - 1, readable.size),
                ));
                headers.push(("content-length", (r.end - r.start).to_string()));
                206
            }
            None => {
                headers.push(("content-length", readable.size.to_string()));
                200
            }
        };
        Download::Content {
            status,
            headers,
            body,
        }
    }
}

/// A body's bytes as they arrive, for the routes that stream (uploads).
pub type BodyChunks = crate::chat::uploads::Chunks<'static>;

/// Whether `path` is a route whose body is streamed rather than read whole first.
pub fn streams_body(path: &str) -> bool {
    [
        "/api/v1/rooms.upload/",
        "/api/v1/rooms.media/",
        "/api/v1/users.setAvatar",
        "/api/v1/plugins.install",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

/// The whole of a streamed body (for a streamed route given a plain body), bounded.
pub async fn collect(mut chunks: BodyChunks, limit: usize) -> Result<Bytes, ()> {
    let mut out = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|_| ())?;
        out.extend_from_slice(&chunk);
        if out.len() > limit {
            return Err(());
        }
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_http_says_and_one_past_the_end_is_unsatisfiable() {
        assert_eq!(byte_range(Some("bytes=0-9"), 100), Ok(Some(0..10)));
        assert_eq!(byte_range(Some("bytes=90-"), 100), Ok(Some(90..100)));
        assert_eq!(byte_range(Some("bytes=-10"), 100), Ok(Some(90..100)));
        assert_eq!(byte_range(Some("bytes=95-200"), 100), Ok(Some(95..100)));
        assert_eq!(byte_range(Some("bytes=100-"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=-0"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(byte_range(Some("bytes=9-2"), 100), Ok(None));
        assert_eq!(byte_range(Some("items=0-1"), 100), Ok(None));
        assert_eq!(byte_range(None, 100), Ok(None));
    }

    #[test]
    fn a_name_in_content_disposition_cannot_break_the_header() {
        let header = disposition("attachment", "a\"b\r\nSet-Cookie: x.txt");
        assert!(!header.contains('\r') && !header.contains('\n'));
        assert!(header.starts_with("attachment; filename=\"a_b__Set-Cookie: x.txt\""));
        assert!(header.contains("filename*=UTF-8''a%22b%0D%0ASet-Cookie%3A%20x.txt"));
    }
}
