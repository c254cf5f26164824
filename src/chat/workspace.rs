//! The workspace-wide DDP methods Rocket.Chat's clients call at start: `license:getModules`
//! and `license:isEnterprise` (comet has no enterprise modules and says so as Rocket.Chat
//! does without a licence), `getUserRoles`, the custom emoji methods (`listEmojiCustom`,
//! `insertOrUpdateEmoji`, `deleteEmojiCustom`) and `slashCommand`.
//!
//! Adapters only: each checks its arguments and calls a service's typed API.

use crate::chat::call::Call;
use crate::chat::commands::{Commands, Invocation};
use crate::chat::emoji::{CustomEmoji, EmojiChange};
use crate::chat::permissions::Permissions;
use crate::engine::args::{check_all, Pattern};
use crate::engine::registry::Registry;
use crate::model::{Document, Value};
use std::sync::Arc;

/// Longest id or name argument.
const MAX_ID: usize = 128;

pub fn register(
    registry: &mut Registry,
    emoji: &Arc<CustomEmoji>,
    commands: &Arc<Commands>,
    permissions: &Arc<Permissions>,
) {
    registry.method("license:getModules", |_ctx, params| async move {
        check_all(&[], &params)?;
        Ok(Some(Value::Array(Vec::new())))
    });
    registry.method("license:isEnterprise", |_ctx, params| async move {
        check_all(&[], &params)?;
        Ok(Some(Value::Bool(false)))
    });
    registry.method_of(
        "getUserRoles",
        permissions,
        |permissions, ctx, params| async move {
            check_all(&[], &params)?;
            Call::method(&ctx).require_user()?;
            let users = permissions.users_with_roles().await?;
            Ok(Some(Value::Array(
                users.into_iter().map(Value::Object).collect(),
            )))
        },
    );
    registry.method_of("listEmojiCustom", emoji, |emoji, ctx, params| async move {
        check_all(&[Pattern::maybe(Pattern::OBJECT)], &params)?;
        Call::method(&ctx).require_user()?;
        let list = emoji.list(None).await?;
        Ok(Some(Value::Array(
            list.update.into_iter().map(Value::Object).collect(),
        )))
    });
    registry.method_of(
        "insertOrUpdateEmoji",
        emoji,
        |emoji, ctx, params| async move {
            let shape = Pattern::object_including(vec![
                ("_id", Pattern::maybe(Pattern::string_up_to(MAX_ID))),
                ("name", Pattern::string_up_to(MAX_ID)),
                ("aliases", Pattern::maybe(Pattern::STRING)),
                ("extension", Pattern::string_up_to(16)),
            ]);
            check_all(&[shape], &params)?;
            let Some(Value::Object(fields)) = params.first() else {
                return Err(crate::engine::ServiceError::match_failed());
            };
            let text = |k: &str| fields.get(k).and_then(Value::as_str).map(str::to_owned);
            let change = EmojiChange {
                id: text("_id"),
                name: text("name").unwrap_or_default(),
                // Rocket.Chat's form sends the aliases as one comma-separated text.
                aliases: text("aliases")
                    .unwrap_or_default()
                    .split(',')
                    .map(|a| a.trim().to_owned())
                    .filter(|a| !a.is_empty())
                    .collect(),
                extension: text("extension").unwrap_or_default(),
            };
            let id = emoji.save(&Call::method(&ctx), change).await?;
            Ok(Some(Value::String(id)))
        },
    );
    registry.method_of(
        "deleteEmojiCustom",
        emoji,
        |emoji, ctx, params| async move {
            check_all(&[Pattern::string_up_to(MAX_ID)], &params)?;
            let id = params.first().and_then(Value::as_str).unwrap_or_default();
            emoji.delete(&Call::method(&ctx), id).await?;
            Ok(Some(Value::Bool(true)))
        },
    );
    registry.method_of(
        "slashCommand",
        commands,
        |commands, ctx, params| async move {
            let shape = Pattern::object_including(vec![
                ("cmd", Pattern::string_up_to(MAX_ID)),
                ("params", Pattern::maybe(Pattern::STRING)),
                (
                    "msg",
                    Pattern::object_including(vec![
                        ("rid", Pattern::string_up_to(MAX_ID)),
                        ("tmid", Pattern::maybe(Pattern::string_up_to(MAX_ID))),
                    ]),
                ),
            ]);
            check_all(&[shape], &params)?;
            let Some(Value::Object(fields)) = params.first() else {
                return Err(crate::engine::ServiceError::match_failed());
            };
            let text = |d: &Document, k: &str| d.get(k).and_then(Value::as_str).map(str::to_owned);
            let msg = match fields.get("msg") {
                Some(Value::Object(m)) => m.clone(),
                _ => Document::default(),
            };
            let call = Call::method(&ctx);
            let invocation = Invocation {
                call: &call,
                rid: text(&msg, "rid").unwrap_or_default(),
                params: text(fields, "params").unwrap_or_default(),
                tmid: text(&msg, "tmid"),
            };
            let name = text(fields, "cmd").unwrap_or_default();
            commands.run(&name, invocation).await
        },
    );
}
