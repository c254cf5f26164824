//! The Upload service's DDP method: `sendFileMessage(roomId, store, file, msgData)`, the
//! message of a file the caller uploaded to the room (over `rooms.media`; comet takes no
//! file bytes over DDP). Adapter only: checks the arguments as Rocket.Chat does and calls
//! [`Uploads::send_file_message`].

use super::{FileMessage, Uploads};
use crate::chat::call::Call;
use crate::engine::args::{check_all, Pattern};
use crate::engine::registry::Registry;
use crate::model::Value;
use std::sync::Arc;

/// Longest id argument.
const MAX_ID: usize = 128;
/// Longest text field of `msgData`.
const MAX_TEXT: usize = 64 * 1024;

pub fn register(registry: &mut Registry, uploads: &Arc<Uploads>) {
    registry.method_of(
        "sendFileMessage",
        uploads,
        |uploads, ctx, params| async move {
            let text = || Pattern::optional(Pattern::string_up_to(MAX_TEXT));
            check_all(
                &[
                    Pattern::string_up_to(MAX_ID),
                    Pattern::ANY,
                    Pattern::object_including(vec![("_id", Pattern::string_up_to(MAX_ID))]),
                    Pattern::optional(Pattern::maybe(Pattern::object_including(vec![
                        ("msg", text()),
                        ("tmid", text()),
                        ("alias", text()),
                        ("emoji", text()),
                        ("avatar", text()),
                        ("description", text()),
                        ("groupable", Pattern::optional(Pattern::BOOLEAN)),
                    ]))),
                ],
                &params,
            )?;
            let rid = params[0].as_str().unwrap_or_default();
            let file = params[2].as_object().cloned().unwrap_or_default();
            let data = params
                .get(3)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let get = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_owned);
            let options = FileMessage {
                msg: get("msg").unwrap_or_default(),
                // Rocket.Chat reads the description from the file record the client sends.
                description: file
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| get("description")),
                tmid: get("tmid").filter(|t| !t.is_empty()),
                alias: get("alias"),
                emoji: get("emoji"),
                avatar: get("avatar"),
                groupable: match data.get("groupable") {
                    Some(Value::Bool(b)) => Some(*b),
                    _ => None,
                },
                ..FileMessage::default()
            };
            let file_id = file.get("_id").and_then(Value::as_str).unwrap_or_default();
            let message = uploads
                .send_file_message(&Call::method(&ctx), rid, file_id, options)
                .await?;
            Ok(Some(Value::Object(message)))
        },
    );
}
