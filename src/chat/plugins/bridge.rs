//! A plugin at the chat core's hook points: each point it declares becomes a call on its
//! wire (*will* points, with the plugin's deadline and policy) or a notification (*has
//! been* points, never awaited), and its slash commands join the command table.
//!
//! Owns the mapping from hook points to the wire's hook names, the shapes of their
//! parameters and answers, and what a missed deadline or a dead plugin does to a write
//! (the manifest's policy: through unchanged, or refused with a clear reason). A plugin is
//! never asked about a message its own bot wrote, so a bot answering messages cannot call
//! itself without end. It must not start processes or store anything.

use super::api::{doc_view, user_view};
use super::figures::Figure;
use super::manifest::Policy;
use super::wire::CallError;
use super::{Plugin, Plugins};
use crate::chat::call::Call;
use crate::chat::commands::{CommandProvider, Invocation, Listed, ProvidedFuture};
use crate::chat::hooks::{
    ChatHooks, FileEvent, HookFuture, MembershipEvent, MessageEvent, Origin, Point, ReactionEvent,
    Verdict,
};
use crate::engine::ServiceError;
use crate::model::value::write_object;
use crate::model::{Document, Value};
use serde_json::{json, Value as Json};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The wire hooks behind each point.
fn wire_hooks(point: Point) -> &'static [&'static str] {
    match point {
        Point::MessageWillBeSaved => &["MessageWillBePosted"],
        Point::MessageHasBeenSaved => &["MessageHasBeenPosted"],
        Point::MessageWillBeEdited => &["MessageWillBeUpdated"],
        Point::MessageHasBeenEdited => &["MessageHasBeenUpdated"],
        Point::MessageHasBeenDeleted => &["MessageHasBeenDeleted"],
        Point::ReactionHasChanged => &["ReactionHasBeenAdded", "ReactionHasBeenRemoved"],
        Point::RoomHasBeenCreated => &["RoomHasBeenCreated"],
        Point::UserHasJoined => &["UserHasJoinedRoom"],
        Point::UserHasLeft => &["UserHasLeftRoom"],
        Point::UserHasBeenCreated => &["UserHasBeenCreated"],
        Point::UserWillLogIn => &["UserWillLogIn"],
        Point::UserHasLoggedIn => &["UserHasLoggedIn"],
        Point::FileWillBeUploaded => &["FileWillBeUploaded"],
        _ => &[],
    }
}

/// One plugin standing at the hook points.
pub struct PluginHooks {
    plugin: Arc<Plugin>,
    /// The points it implements (fixed for this manifest: a reload makes a new one).
    points: Vec<Point>,
    priority: i64,
}

impl PluginHooks {
    pub fn new(plugin: Arc<Plugin>) -> Arc<Self> {
        let manifest = plugin.manifest();
        let points = Point::ALL
            .into_iter()
            .filter(|p| wire_hooks(*p).iter().any(|h| manifest.implements(h)))
            .collect();
        Arc::new(Self {
            priority: manifest.priority,
            plugin,
            points,
        })
    }

    /// Whether `message` is the plugin's own bot's.
    fn own(&self, message: &Document) -> bool {
        let bot = self.plugin.bot_id();
        bot.is_some() && crate::chat::author_of(message) == bot.as_deref()
    }

    /// Asks a *will* hook (`params` as JSON text); the plugin's answer, or its policy when
    /// there is none.
    async fn ask(&self, hook: &str, params: String, field: &str) -> Verdict<Document> {
        let manifest = self.plugin.manifest();
        let counters = &self.plugin.counters;
        let outcome = match self.plugin.peer() {
            None => Err(CallError::Dead),
            Some(peer) => peer.call_text(hook, &params, manifest.hook_deadline).await,
        };
        let why = match outcome {
            Ok(answer) => match read_verdict(&answer, field) {
                Ok(verdict) => {
                    counters.count(Figure::HooksAnswered);
                    return verdict;
                }
                Err(why) => {
                    counters.count(Figure::HooksFailed);
                    why
                }
            },
            Err(CallError::Timeout(after)) => {
                counters.count(Figure::HooksMissed);
                format!("no answer within {} ms", after.as_millis())
            }
            Err(err) => {
                counters.count(Figure::HooksFailed);
                err.to_string()
            }
        };
        // At most one warning a second per plugin: a plugin missing every deadline under
        // load would otherwise write one line per message. `/metrics` counts them all.
        if self.plugin.may_warn() {
            tracing::warn!(plugin = %self.plugin.id, %hook, cause = %why, policy = manifest.policy.as_str(), "plugin hook failed: its policy applies (further failures this second are counted, not logged)");
        }
        match manifest.policy {
            Policy::FailOpen => Verdict::Keep,
            Policy::FailClosed => {
                counters.count(Figure::RefusedByPolicy);
                Verdict::Refuse(format!(
                    "The plugin {} could not check this ({why}), and refuses what it cannot check",
                    self.plugin.id
                ))
            }
        }
    }

    /// Tells a *has been* hook (`params` as JSON text), without waiting.
    fn tell(&self, hook: &str, params: impl FnOnce() -> String) {
        if !self.plugin.manifest().implements(hook) {
            return;
        }
        let sent = self
            .plugin
            .peer()
            .is_some_and(|peer| peer.notify_text(hook, &params()));
        if !sent {
            self.plugin.counters.count(Figure::EventsDropped);
        }
    }
}

/// A message hook's parameters, written straight as EJSON text.
fn message_params(message: &Document, room: &Document, origin: Origin) -> String {
    let mut out = String::with_capacity(2048);
    out.push_str("{\"message\":");
    write_object(message, &mut out);
    out.push_str(",\"room\":");
    write_object(room, &mut out);
    out.push_str(",\"origin\":\"");
    out.push_str(origin.as_str());
    out.push_str("\"}");
    out
}

/// Reads a *will* hook's answer: `null` or `{"action": "allow"}` keeps, `{"action":
/// "reject", "reason"}` refuses, `{"action": "rewrite", <field>: {...}}` replaces.
pub fn read_verdict(answer: &Json, field: &str) -> Result<Verdict<Document>, String> {
    if answer.is_null() {
        return Ok(Verdict::Keep);
    }
    match answer.get("action").and_then(Json::as_str) {
        Some("allow") => Ok(Verdict::Keep),
        Some("reject") => Ok(Verdict::Refuse(
            answer
                .get("reason")
                .and_then(Json::as_str)
                .filter(|r| !r.is_empty())
                .map_or_else(
                    || "Refused by a plugin".to_owned(),
                    |r| r.chars().take(500).collect(),
                ),
        )),
        Some("rewrite") => match answer.get(field).cloned().map(Value::from_json) {
            Some(Ok(Value::Object(doc))) => Ok(Verdict::Replace(doc)),
            _ => Err(format!("a rewrite without a {field} object")),
        },
        _ => Err("an answer that is not allow, reject or rewrite".into()),
    }
}

fn refuse_only(verdict: Verdict<Document>) -> Verdict<()> {
    match verdict {
        Verdict::Refuse(reason) => Verdict::Refuse(reason),
        _ => Verdict::Keep,
    }
}

impl ChatHooks for PluginHooks {
    fn name(&self) -> &str {
        &self.plugin.id
    }

    fn implements(&self, point: Point) -> bool {
        self.points.contains(&point)
    }

    fn rank(&self) -> (i64, &str) {
        (self.priority, &self.plugin.id)
    }

    fn message_will_be_saved<'a>(
        &'a self,
        event: MessageEvent<'a>,
    ) -> HookFuture<'a, Verdict<Document>> {
        Box::pin(async move {
            if self.own(event.message) {
                return Verdict::Keep;
            }
            let params = message_params(event.message, event.room, event.origin);
            self.ask("MessageWillBePosted", params, "message").await
        })
    }

    fn message_has_been_saved<'a>(
        &'a self,
        event: MessageEvent<'a>,
        _call: &'a Call<'a>,
    ) -> HookFuture<'a, ()> {
        if !self.own(event.message) {
            self.tell("MessageHasBeenPosted", || {
                message_params(event.message, event.room, event.origin)
            });
        }
        Box::pin(std::future::ready(()))
    }

    fn message_will_be_edited<'a>(
        &'a self,
        before: &'a Document,
        after: &'a Document,
    ) -> HookFuture<'a, Verdict<Document>> {
        Box::pin(async move {
            if self.own(before) {
                return Verdict::Keep;
            }
            let params = json!({"old": doc_view(before), "message": doc_view(after)});
            self.ask("MessageWillBeUpdated", params.to_string(), "message")
                .await
        })
    }

    fn message_has_been_edited<'a>(&'a self, message: &'a Document) -> HookFuture<'a, ()> {
        if !self.own(message) {
            self.tell("MessageHasBeenUpdated", || {
                json!({"message": doc_view(message)}).to_string()
            });
        }
        Box::pin(std::future::ready(()))
    }

    fn message_has_been_deleted<'a>(
        &'a self,
        message: &'a Document,
        by: &'a Document,
    ) -> HookFuture<'a, ()> {
        self.tell("MessageHasBeenDeleted", || {
            json!({"message": doc_view(message), "by": user_view(by)}).to_string()
        });
        Box::pin(std::future::ready(()))
    }

    fn reaction_has_changed<'a>(&'a self, event: ReactionEvent<'a>) -> HookFuture<'a, ()> {
        let hook = if event.added {
            "ReactionHasBeenAdded"
        } else {
            "ReactionHasBeenRemoved"
        };
        self.tell(hook, || {
            json!({
                "message": doc_view(event.message), "user": user_view(event.user),
                "reaction": event.reaction,
            })
            .to_string()
        });
        Box::pin(std::future::ready(()))
    }

    fn room_has_been_created<'a>(
        &'a self,
        room: &'a Document,
        _call: &'a Call<'a>,
    ) -> HookFuture<'a, ()> {
        self.tell("RoomHasBeenCreated", || {
            json!({"room": doc_view(room)}).to_string()
        });
        Box::pin(std::future::ready(()))
    }

    fn user_has_joined<'a>(
        &'a self,
        event: MembershipEvent<'a>,
        _call: &'a Call<'a>,
    ) -> HookFuture<'a, ()> {
        self.tell("UserHasJoinedRoom", || membership(event).to_string());
        Box::pin(std::future::ready(()))
    }

    fn user_has_left<'a>(
        &'a self,
        event: MembershipEvent<'a>,
        _call: &'a Call<'a>,
    ) -> HookFuture<'a, ()> {
        self.tell("UserHasLeftRoom", || membership(event).to_string());
        Box::pin(std::future::ready(()))
    }

    fn user_has_been_created<'a>(
        &'a self,
        user: &'a Document,
        _call: &'a Call<'a>,
    ) -> HookFuture<'a, ()> {
        self.tell("UserHasBeenCreated", || {
            json!({"user": user_view(user)}).to_string()
        });
        Box::pin(std::future::ready(()))
    }

    fn user_will_log_in<'a>(&'a self, user: &'a Document) -> HookFuture<'a, Verdict<()>> {
        Box::pin(async move {
            let verdict = self
                .ask(
                    "UserWillLogIn",
                    json!({"user": user_view(user)}).to_string(),
                    "user",
                )
                .await;
            refuse_only(verdict)
        })
    }

    fn user_has_logged_in<'a>(&'a self, user: &'a Document) -> HookFuture<'a, ()> {
        self.tell("UserHasLoggedIn", || {
            json!({"user": user_view(user)}).to_string()
        });
        Box::pin(std::future::ready(()))
    }

    fn file_will_be_uploaded<'a>(
        &'a self,
        event: FileEvent<'a>,
    ) -> HookFuture<'a, Verdict<Document>> {
        Box::pin(async move {
            let params = json!({
                "file": doc_view(event.file), "room": doc_view(event.room),
                "user": user_view(event.user),
            });
            self.ask("FileWillBeUploaded", params.to_string(), "file")
                .await
        })
    }
}

fn membership(event: MembershipEvent<'_>) -> Json {
    json!({
        "room": doc_view(event.room), "user": user_view(event.user),
        "by": event.by.map(user_view),
    })
}

/// The slash commands of every enabled plugin, for the command table.
pub struct PluginCommands {
    pub(super) plugins: Weak<Plugins>,
}

/// Shortest time a command is given to answer.
const COMMAND_DEADLINE: Duration = Duration::from_secs(5);

impl CommandProvider for PluginCommands {
    fn commands(&self) -> Vec<Listed> {
        let Some(plugins) = self.plugins.upgrade() else {
            return Vec::new();
        };
        plugins
            .enabled()
            .iter()
            .flat_map(|p| {
                p.manifest()
                    .commands
                    .iter()
                    .map(|c| Listed {
                        command: c.command.clone(),
                        params: c.params.clone(),
                        description: c.description.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn run<'a>(
        &'a self,
        name: &'a str,
        inv: &'a Invocation<'a>,
        room: &'a Document,
    ) -> ProvidedFuture<'a> {
        Box::pin(async move {
            let Some(plugins) = self.plugins.upgrade() else {
                return Ok(None);
            };
            let Some(plugin) = plugins
                .enabled()
                .into_iter()
                .find(|p| p.manifest().commands.iter().any(|c| c.command == name))
            else {
                return Ok(None);
            };
            let user = inv.call.require_user()?;
            let failed = |why: String| {
                ServiceError::Client(crate::model::MeteorError::new(
                    "error-plugin-command",
                    format!("The plugin {} did not run /{name}: {why}", plugin.id),
                ))
            };
            let Some(peer) = plugin.peer() else {
                return Err(failed("it is not running".into()));
            };
            let deadline = plugin.manifest().hook_deadline.max(COMMAND_DEADLINE);
            let params = json!({
                "command": name, "params": inv.params, "roomId": inv.rid, "userId": user,
                "tmid": inv.tmid, "room": doc_view(room),
            });
            let answer = match peer.call("ExecuteCommand", params, deadline).await {
                Ok(answer) => {
                    plugin.counters.count(Figure::HooksAnswered);
                    answer
                }
                Err(err) => {
                    if matches!(err, CallError::Timeout(_)) {
                        plugin.counters.count(Figure::HooksMissed);
                    } else {
                        plugin.counters.count(Figure::HooksFailed);
                    }
                    return Err(failed(err.to_string()));
                }
            };
            if let Some(text) = answer.get("ephemeral").and_then(Json::as_str) {
                plugins.ephemeral(&plugin, user, &inv.rid, text);
            }
            Ok(None)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_as_verdicts_and_anything_else_is_the_plugins_fault() {
        assert_eq!(read_verdict(&Json::Null, "message"), Ok(Verdict::Keep));
        assert_eq!(
            read_verdict(&json!({"action": "allow"}), "message"),
            Ok(Verdict::Keep)
        );
        assert_eq!(
            read_verdict(&json!({"action": "reject", "reason": "no"}), "message"),
            Ok(Verdict::Refuse("no".into()))
        );
        let Ok(Verdict::Replace(doc)) = read_verdict(
            &json!({"action": "rewrite", "message": {"msg": "hi", "ts": {"$date": 5}}}),
            "message",
        ) else {
            panic!("a rewrite is a replacement");
        };
        assert_eq!(doc.get("ts"), Some(&Value::Date(5.0)));
        assert!(read_verdict(&json!({"action": "rewrite"}), "message").is_err());
        assert!(read_verdict(&json!({"action": "maybe"}), "message").is_err());
        assert!(read_verdict(&json!("yes"), "message").is_err());
    }

    #[test]
    fn every_declarable_point_hook_has_a_point() {
        for hook in super::super::manifest::HOOKS {
            let at_point = Point::ALL.into_iter().any(|p| wire_hooks(p).contains(hook));
            let elsewhere = [
                "OnActivate",
                "OnDeactivate",
                "OnConfigurationChange",
                "ExecuteCommand",
                "ServeHTTP",
                "OnPluginClusterEvent",
                "RunJob",
            ]
            .contains(hook);
            assert!(at_point != elsewhere, "{hook}");
        }
    }
}
