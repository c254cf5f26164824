//! Hook points on the chat services' writes: before each kind of write a *will* hook may
//! refuse it (with a reason) or hand back a rewritten value; after it a *has been* hook
//! learns what was written. Each kind of write has exactly one path through the services,
//! and that path calls its two points here, so a hook sees every write of its kind once.
//!
//! Owns the [`ChatHooks`] trait (every point with a do-nothing default), the [`Hooks`] list
//! the services hold, and the rule for running them: by rank (comet's own first, then
//! plugins by priority and id), else in the order they were added; the first refusal stops
//! the write; each rewrite is what the next hook sees. With no hook
//! added nothing is called and nothing allocated. It must not know what a hook is made of
//! (in process now, a plugin's subprocess later) nor write anything itself.

use crate::chat::call::Call;
use crate::model::Document;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

/// What a hook's future yields.
pub type HookFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a *will* hook decides about a write.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict<T> {
    /// Write it as it is.
    Keep,
    /// Do not write it; the reason is told to the caller.
    Refuse(String),
    /// Write this instead.
    Replace(T),
}

/// Where a message to be stored comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A user's own message (`sendMessage`, `chat.postMessage`, ...).
    User,
    /// A message of a user with the `bot` role.
    Bot,
    /// A message the server writes on an action (a join, a leave, a pin, a rename, ...).
    System,
}

impl Origin {
    /// The name a hook author reads (`user`, `bot`, `system`).
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::User => "user",
            Origin::Bot => "bot",
            Origin::System => "system",
        }
    }
}

/// A message about to be stored or just stored, with its room.
#[derive(Clone, Copy, Debug)]
pub struct MessageEvent<'a> {
    pub origin: Origin,
    pub message: &'a Document,
    pub room: &'a Document,
}

/// A member joining or leaving a room.
#[derive(Clone, Copy, Debug)]
pub struct MembershipEvent<'a> {
    pub room: &'a Document,
    pub user: &'a Document,
    /// Who added or removed them, when it was not the user.
    pub by: Option<&'a Document>,
}

/// A reaction set or taken back on a message.
#[derive(Clone, Copy, Debug)]
pub struct ReactionEvent<'a> {
    pub message: &'a Document,
    pub user: &'a Document,
    /// `:name:`.
    pub reaction: &'a str,
    /// Set (`true`) or taken back.
    pub added: bool,
}

/// A file uploaded to a room, before its record is stored.
#[derive(Clone, Copy, Debug)]
pub struct FileEvent<'a> {
    /// The upload's record: `_id`, `name`, `type`, `size`, `rid`, `userId`, ...
    pub file: &'a Document,
    pub room: &'a Document,
    pub user: &'a Document,
}

/// The hook points, one per kind of write and side of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Point {
    MessageWillBeSaved,
    MessageHasBeenSaved,
    MessageWillBeEdited,
    MessageHasBeenEdited,
    MessageWillBeDeleted,
    MessageHasBeenDeleted,
    ReactionWillChange,
    ReactionHasChanged,
    RoomWillBeCreated,
    RoomHasBeenCreated,
    UserWillJoin,
    UserHasJoined,
    UserWillLeave,
    UserHasLeft,
    UserWillBeCreated,
    UserHasBeenCreated,
    UserWillLogIn,
    UserHasLoggedIn,
    FileWillBeUploaded,
    RoomHasBeenErased,
}

impl Point {
    /// Every point.
    pub const ALL: [Point; 20] = [
        Point::MessageWillBeSaved,
        Point::MessageHasBeenSaved,
        Point::MessageWillBeEdited,
        Point::MessageHasBeenEdited,
        Point::MessageWillBeDeleted,
        Point::MessageHasBeenDeleted,
        Point::ReactionWillChange,
        Point::ReactionHasChanged,
        Point::RoomWillBeCreated,
        Point::RoomHasBeenCreated,
        Point::UserWillJoin,
        Point::UserHasJoined,
        Point::UserWillLeave,
        Point::UserHasLeft,
        Point::UserWillBeCreated,
        Point::UserHasBeenCreated,
        Point::UserWillLogIn,
        Point::UserHasLoggedIn,
        Point::FileWillBeUploaded,
        Point::RoomHasBeenErased,
    ];

    fn bit(self) -> u32 {
        1 << (self as u8)
    }
}

fn keep<'a, T: Send + 'a>() -> HookFuture<'a, Verdict<T>> {
    Box::pin(std::future::ready(Verdict::Keep))
}

fn done<'a>() -> HookFuture<'a, ()> {
    Box::pin(std::future::ready(()))
}

/// The hook points. Every method has a default that does nothing, so an implementation
/// names only the points it cares about. *Has been* hooks that write (joining the default
/// channels, say) record their writes in the `call` they get, so the caller's method waits for them.
pub trait ChatHooks: Send + Sync {
    /// A name for the log (a plugin's id).
    fn name(&self) -> &str;

    /// Whether this implements `point`: the points it does not are never called, so a hook
    /// on joins costs a message nothing.
    fn implements(&self, _point: Point) -> bool {
        true
    }

    /// Where this runs among the hooks: lower first, ties by the text, then by the order
    /// they were added. comet's own hooks keep the default and run before any plugin's
    /// (`(priority, id)` from its manifest).
    fn rank(&self) -> (i64, &str) {
        (i64::MIN, "")
    }

    /// Before a message is stored (user, bot and system messages alike). A replacement
    /// keeps the message's `_id`, `rid`, `u` and `t`: a hook rewrites what is said, never
    /// where, by whom or of what kind.
    fn message_will_be_saved<'a>(
        &'a self,
        _event: MessageEvent<'a>,
    ) -> HookFuture<'a, Verdict<Document>> {
        keep()
    }
    /// After a message was stored.
    fn message_has_been_saved<'a>(
        &'a self,
        _event: MessageEvent<'a>,
        _call: &'a Call<'a>,
    ) -> HookFuture<'a, ()> {
        done()
    }

    /// Before an edit: `before` as stored, `after` as it would be stored.
    fn message_will_be_edited<'a>(
        &'a self,
        _before: &'a Document,
        _after: &'a Document,
    ) -> HookFuture<'a, Verdict<Document>> {
        keep()
    }
    /// After an edit.
    fn message_has_been_edited<'a>(&'a self, _message: &'a Document) -> HookFuture<'a, ()> {
        done()
    }

    /// Before a message is deleted (`by` deletes it).
    fn message_will_be_deleted<'a>(
        &'a self,
        _message: &'a Document,
        _by: &'a Document,
    ) -> HookFuture<'a, Verdict<()>> {
        keep()
    }
    /// After a message was deleted.
    fn message_has_been_deleted<'a>(
        &'a self,
        _message: &'a Document,
        _by: &'a Document,
    ) -> HookFuture<'a, ()> {
        done()
    }

    /// Before a reaction is set or taken back.
    fn reaction_will_change<'a>(
        &'a self,
        _event: ReactionEvent<'a>,
    ) -> HookFuture<'a, Verdict<()>> {
        keep()
    }
    /// After a reaction was set or taken back.
    fn reaction_has_changed<'a>(&'a self, _event: ReactionEvent<'a>) -> HookFuture<'a, ()> {
        done()
    }

    /// Before a room is created (channels, groups, direct messages, a team's main room); a
    /// replacement keeps the room's `_id`, `t` and `name`.
    fn room_will_be_created<'a>(
        &'a self,
        _room: &'a Document,
    ) -> HookFuture<'a, Verdict<Document>> {
        keep()
    }
    /// After a room was created (its creator and first members are in it).
    fn room_has_been_created<'a>(
        &'a self,
        _room: &'a Document,
        _call: &'a Call<'a>,
    ) -> HookFuture<'a, ()> {
        done()
    }

    /// Before a user joins a room (by itself or added by someone).
    fn user_will_join<'a>(&'a self, _event: MembershipEvent<'a>) -> HookFuture<'a, Verdict<()>> {
        keep()
    }
    /// After a user joined a room.
    fn user_has_joined<'a>(
        &'a self,
        _event: MembershipEvent<'a>,
        _call: &'a Call<'a>,
    ) -> HookFuture<'a, ()> {
        done()
    }

    /// Before a user leaves a room (by itself or removed by someone).
    fn user_will_leave<'a>(&'a self, _event: MembershipEvent<'a>) -> HookFuture<'a, Verdict<()>> {
        keep()
    }
    /// After a user left a room.
    fn user_has_left<'a>(
        &'a self,
        _event: MembershipEvent<'a>,
        _call: &'a Call<'a>,
    ) -> HookFuture<'a, ()> {
        done()
    }

    /// Before a user is created; a replacement keeps the user's `_id`, `username`,
    /// `emails`, `services` and `roles`.
    fn user_will_be_created<'a>(
        &'a self,
        _user: &'a Document,
    ) -> HookFuture<'a, Verdict<Document>> {
        keep()
    }
    /// After a user was created. A user created without a username counts as created when
    /// it first gets one.
    fn user_has_been_created<'a>(
        &'a self,
        _user: &'a Document,
        _call: &'a Call<'a>,
    ) -> HookFuture<'a, ()> {
        done()
    }

    /// Before a login by password or token is let in.
    fn user_will_log_in<'a>(&'a self, _user: &'a Document) -> HookFuture<'a, Verdict<()>> {
        keep()
    }
    /// After a user logged in.
    fn user_has_logged_in<'a>(&'a self, _user: &'a Document) -> HookFuture<'a, ()> {
        done()
    }

    /// Before an uploaded file's record is stored (its bytes are, and go if it is refused):
    /// a rewrite may change only its `name` and `description`.
    fn file_will_be_uploaded<'a>(
        &'a self,
        _event: FileEvent<'a>,
    ) -> HookFuture<'a, Verdict<Document>> {
        keep()
    }

    /// After a room was erased with its messages.
    fn room_has_been_erased<'a>(
        &'a self,
        _room: &'a Document,
        _call: &'a Call<'a>,
    ) -> HookFuture<'a, ()> {
        done()
    }
}

/// The hooks the services run, in the order they were added.
#[derive(Default)]
pub struct Hooks {
    /// The points some hook implements: the one load on a write's path when none does.
    points: AtomicU32,
    list: RwLock<Arc<[Arc<dyn ChatHooks>]>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.all().iter().map(|h| h.name().to_owned()).collect();
        f.debug_struct("Hooks").field("hooks", &names).finish()
    }
}

/// Why a write did not happen: a hook refused it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub hook: String,
    pub reason: String,
}

/// What a client is told of a refusal: Rocket.Chat's refusal by an app, with the hook and
/// its reason in the details.
impl From<Refused> for crate::engine::ServiceError {
    fn from(refused: Refused) -> Self {
        crate::engine::ServiceError::Client(
            crate::model::MeteorError::new("error-app-prevented", refused.reason.clone())
                .with_details(serde_json::json!({"hook": refused.hook, "reason": refused.reason})),
        )
    }
}

impl Refused {
    /// `hook`'s refusal, logged.
    pub fn by(hook: &str, reason: String) -> Self {
        tracing::debug!(hook, %reason, "a hook refused a write");
        Self {
            hook: hook.to_owned(),
            reason,
        }
    }
}

impl Hooks {
    /// No hooks.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds `hook` after those already added of its rank.
    pub fn add(&self, hook: Arc<dyn ChatHooks>) {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<Arc<dyn ChatHooks>> = list.iter().cloned().collect();
        all.push(hook);
        all.sort_by(|a, b| a.rank().cmp(&b.rank()));
        self.points.store(mask_of(&all), Ordering::Release);
        *list = all.into();
    }

    /// Takes out the hook named `name` (a plugin disabled); `false` when none was.
    pub fn remove(&self, name: &str) -> bool {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        let all: Vec<Arc<dyn ChatHooks>> =
            list.iter().filter(|h| h.name() != name).cloned().collect();
        let removed = all.len() != list.len();
        self.points.store(mask_of(&all), Ordering::Release);
        *list = all.into();
        removed
    }

    /// Whether no hook is added.
    pub fn is_empty(&self) -> bool {
        self.points.load(Ordering::Acquire) == 0
    }

    /// Whether some hook implements `point`.
    pub fn has(&self, point: Point) -> bool {
        self.points.load(Ordering::Acquire) & point.bit() != 0
    }

    /// The hooks, a snapshot (adding one meanwhile changes nothing for a write under way).
    pub fn all(&self) -> Arc<[Arc<dyn ChatHooks>]> {
        self.list.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Runs a *will* point over every hook that implements it, in order:
/// `will_hook!(hooks, point, value, |hook, current| hook.some_point(.., current, ..))` gives
/// `Ok(None)` when the value is kept as it is, `Ok(Some(last replacement))`, or
/// `Err(Refused)` from the first refusal. With no hook on the point, one atomic load.
macro_rules! will_hook {
    ($hooks:expr, $point:expr, $value:expr, |$hook:ident, $current:ident| $call:expr) => {{
        let hooks: &$crate::chat::hooks::Hooks = &$hooks;
        let point: $crate::chat::hooks::Point = $point;
        let mut replaced = None;
        let mut refused: Option<$crate::chat::hooks::Refused> = None;
        if hooks.has(point) {
            for $hook in hooks.all().iter().filter(|h| h.implements(point)) {
                let $current = replaced.as_ref().unwrap_or(&$value);
                match $call.await {
                    $crate::chat::hooks::Verdict::Keep => {}
                    $crate::chat::hooks::Verdict::Replace(next) => replaced = Some(next),
                    $crate::chat::hooks::Verdict::Refuse(reason) => {
                        refused = Some($crate::chat::hooks::Refused::by($hook.name(), reason));
                        break;
                    }
                }
            }
        }
        match refused {
            Some(refused) => Err(refused),
            None => Ok(replaced),
        }
    }};
}

/// Runs a *will* point that decides only yes or no: `allow_hook!(hooks, point, |hook|
/// hook.some_point(..))` gives `Ok(())` or the first `Err(Refused)`.
macro_rules! allow_hook {
    ($hooks:expr, $point:expr, |$hook:ident| $call:expr) => {{
        let hooks: &$crate::chat::hooks::Hooks = &$hooks;
        let point: $crate::chat::hooks::Point = $point;
        let mut outcome: Result<(), $crate::chat::hooks::Refused> = Ok(());
        if hooks.has(point) {
            for $hook in hooks.all().iter().filter(|h| h.implements(point)) {
                if let $crate::chat::hooks::Verdict::Refuse(reason) = $call.await {
                    outcome = Err($crate::chat::hooks::Refused::by($hook.name(), reason));
                    break;
                }
            }
        }
        outcome
    }};
}

/// Runs a *has been* point over every hook that implements it, in order.
macro_rules! after_hook {
    ($hooks:expr, $point:expr, |$hook:ident| $call:expr) => {{
        let hooks: &$crate::chat::hooks::Hooks = &$hooks;
        let point: $crate::chat::hooks::Point = $point;
        if hooks.has(point) {
            for $hook in hooks.all().iter().filter(|h| h.implements(point)) {
                $call.await;
            }
        }
    }};
}

pub(crate) use {after_hook, allow_hook, will_hook};

/// A hook at every point that keeps everything as it is: what a benchmark adds to measure
/// the cost of running hooks (`COMET_BENCH_PASSTHROUGH_HOOK`).
pub struct PassThrough;

impl ChatHooks for PassThrough {
    fn name(&self) -> &str {
        "comet.pass-through"
    }
}

/// The points some hook of `hooks` implements.
fn mask_of(hooks: &[Arc<dyn ChatHooks>]) -> u32 {
    hooks
        .iter()
        .flat_map(|h| Point::ALL.into_iter().filter(|p| h.implements(*p)))
        .fold(0, |mask, p| mask | p.bit())
}

/// `replacement` with `kept`'s values of `fields` (what a hook may not change).
pub fn keeping(kept: &Document, mut replacement: Document, fields: &[&str]) -> Document {
    for field in fields {
        match kept.get(*field) {
            Some(v) => {
                replacement.insert((*field).to_owned(), v.clone());
            }
            None => {
                replacement.shift_remove(*field);
            }
        }
    }
    replacement
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Value;

    struct Shout;
    impl ChatHooks for Shout {
        fn name(&self) -> &str {
            "shout"
        }
        fn message_will_be_saved<'a>(
            &'a self,
            event: MessageEvent<'a>,
        ) -> HookFuture<'a, Verdict<Document>> {
            let mut m = event.message.clone();
            let loud = m
                .get("msg")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_uppercase();
            m.insert("msg".into(), Value::from(loud.as_str()));
            Box::pin(std::future::ready(Verdict::Replace(m)))
        }
    }

    struct NoSecrets;
    impl ChatHooks for NoSecrets {
        fn name(&self) -> &str {
            "no-secrets"
        }
        fn message_will_be_saved<'a>(
            &'a self,
            event: MessageEvent<'a>,
        ) -> HookFuture<'a, Verdict<Document>> {
            let said = event
                .message
                .get("msg")
                .and_then(Value::as_str)
                .unwrap_or("");
            Box::pin(std::future::ready(if said.contains("SECRET") {
                Verdict::Refuse("no secrets here".into())
            } else {
                Verdict::Keep
            }))
        }
    }

    struct JoinsOnly;
    impl ChatHooks for JoinsOnly {
        fn name(&self) -> &str {
            "joins-only"
        }
        fn implements(&self, point: Point) -> bool {
            point == Point::UserHasJoined
        }
        fn message_will_be_saved<'a>(
            &'a self,
            _: MessageEvent<'a>,
        ) -> HookFuture<'a, Verdict<Document>> {
            Box::pin(std::future::ready(Verdict::Refuse("never asked".into())))
        }
    }

    fn message(text: &str) -> Document {
        let mut m = Document::default();
        m.insert("msg".into(), Value::from(text));
        m
    }

    async fn save(hooks: &Hooks, m: &Document) -> Result<Option<Document>, Refused> {
        let room = Document::default();
        will_hook!(hooks, Point::MessageWillBeSaved, *m, |hook, current| {
            hook.message_will_be_saved(MessageEvent {
                origin: Origin::User,
                message: current,
                room: &room,
            })
        })
    }

    #[tokio::test]
    async fn hooks_run_in_order_each_seeing_the_last_rewrite() {
        let hooks = Hooks::new();
        assert_eq!(save(&hooks, &message("hi")).await, Ok(None));
        hooks.add(Arc::new(Shout));
        hooks.add(Arc::new(NoSecrets));
        // The rewrite comes first, so the second hook sees the shouted text.
        assert_eq!(
            save(&hooks, &message("a secret")).await,
            Err(Refused {
                hook: "no-secrets".into(),
                reason: "no secrets here".into()
            })
        );
        assert_eq!(save(&hooks, &message("hi")).await, Ok(Some(message("HI"))));
        assert!(hooks.remove("no-secrets"));
        assert!(!hooks.remove("no-secrets"));
        assert_eq!(
            save(&hooks, &message("a secret")).await,
            Ok(Some(message("A SECRET")))
        );
        assert!(hooks.remove("shout"));
        assert!(hooks.is_empty());
        // A hook on joins only is never asked about a message.
        hooks.add(Arc::new(JoinsOnly));
        assert!(hooks.has(Point::UserHasJoined) && !hooks.has(Point::MessageWillBeSaved));
        assert_eq!(save(&hooks, &message("hi")).await, Ok(None));
    }

    #[test]
    fn a_replacement_keeps_what_a_hook_may_not_change() {
        let mut kept = message("old");
        kept.insert("rid".into(), Value::from("r1"));
        let mut replacement = message("new");
        replacement.insert("rid".into(), Value::from("elsewhere"));
        replacement.insert("t".into(), Value::from("uj"));
        let out = keeping(&kept, replacement, &["rid", "t"]);
        assert_eq!(out.get("rid"), Some(&Value::from("r1")));
        assert_eq!(out.get("t"), None);
        assert_eq!(out.get("msg"), Some(&Value::from("new")));
    }
}
