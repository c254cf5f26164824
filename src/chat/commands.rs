//! Slash commands: the table `commands.list` shows and `commands.run` runs, with the
//! built-in commands Rocket.Chat ships that need no outside service.
//!
//! A command is a name, a parameter hint, a description (Rocket.Chat's i18n keys, which its
//! clients translate), and what it does, always through the typed API of the service the
//! command stands for (`/join` is `Rooms::join`, `/topic` is `Rooms::save_settings`), so it
//! passes the same permission checks as the method. Plugins add their commands to the same
//! table later. It must not know about sessions or HTTP.

use crate::chat::call::Call;
use crate::chat::messages::{Messages, Outgoing};
use crate::chat::presence::Presence;
use crate::chat::records::RoomKind;
use crate::chat::rooms::members::RoomSetting;
use crate::chat::rooms::{NewRoom, Rooms};
use crate::engine::error::ServiceError;
use crate::model::{Document, MeteorError, Value};
use std::sync::Arc;

/// Most members `/invite-all-to` and `/invite-all-from` carry over at once.
const MAX_INVITED: usize = 1000;

/// Longest parameter text a command takes.
const MAX_PARAMS: usize = 5000;

/// What a command acts with.
pub struct Invocation<'c> {
    pub call: &'c Call<'c>,
    pub rid: String,
    pub params: String,
    pub tmid: Option<String>,
}

/// A built-in command's action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Join,
    Leave,
    Invite,
    Kick,
    Mute,
    Unmute,
    Topic,
    Archive,
    Unarchive,
    Create,
    Msg,
    Me,
    Status,
    InviteAllTo,
    InviteAllFrom,
    /// Sends the parameters with this text after them.
    Append(&'static str),
    Help,
}

/// One command as `commands.list` shows it.
pub struct Command {
    pub command: &'static str,
    pub params: &'static str,
    pub description: &'static str,
    action: Action,
}

const fn command(
    command: &'static str,
    params: &'static str,
    description: &'static str,
    action: Action,
) -> Command {
    Command {
        command,
        params,
        description,
        action,
    }
}

/// The built-in commands.
#[rustfmt::skip]
const BUILT_IN: &[Command] = &[
    command("join", "#channel", "Join_the_given_channel", Action::Join),
    command("leave", "", "Leave_the_current_channel", Action::Leave),
    command("part", "", "Leave_the_current_channel", Action::Leave),
    command("invite", "@username", "Invite_user_to_join_channel", Action::Invite),
    command("kick", "@username", "Remove_someone_from_room", Action::Kick),
    command("mute", "@username", "Mute_someone_in_room", Action::Mute),
    command("unmute", "@username", "Unmute_someone_in_room", Action::Unmute),
    command("topic", "Slash_Topic_Params", "Slash_Topic_Description", Action::Topic),
    command("archive", "#channel", "Archive", Action::Archive),
    command("unarchive", "#channel", "Unarchive", Action::Unarchive),
    command("create", "#channel", "Create_A_New_Channel", Action::Create),
    command("msg", "@username <message>", "Direct_message_someone", Action::Msg),
    command("me", "your_message", "Displays_action_text", Action::Me),
    command("status", "Slash_Status_Params", "Slash_Status_Description", Action::Status),
    command("invite-all-to", "#room", "Invite_user_to_join_channel_all_to", Action::InviteAllTo),
    command("invite-all-from", "#room", "Invite_user_to_join_channel_all_from", Action::InviteAllFrom),
    command("shrug", "your_message_optional", "Slash_Shrug_Description", Action::Append("¯\\_(ツ)_/¯")),
    command("tableflip", "your_message_optional", "Slash_Tableflip_Description", Action::Append("(╯°□°）╯︵ ┻━┻")),
    command("unflip", "your_message_optional", "Slash_TableUnflip_Description", Action::Append("┬─┬ ノ( ゜-゜ノ)")),
    command("lennyface", "your_message_optional", "Slash_LennyFace_Description", Action::Append("( ͡° ͜ʖ ͡°)")),
    command("gimme", "your_message_optional", "Slash_Gimme_Description", Action::Append("༼ つ ◕_◕ ༽つ")),
    command("help", "", "Show_the_keyboard_shortcut_list", Action::Help),
];

fn invalid(error: &str, reason: &str) -> ServiceError {
    ServiceError::Client(MeteorError::new(error, reason))
}

/// The first word of `params`, without the `@` or `#` it may start with.
fn target(params: &str, sigil: char) -> Option<String> {
    let word = params.split_whitespace().next()?;
    let name = word.strip_prefix(sigil).unwrap_or(word);
    (!name.is_empty()).then(|| name.to_owned())
}

/// One command as a list shows it: a built-in one or one a provider adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub command: String,
    pub params: String,
    pub description: String,
}

/// What a provider's command runs with: the invocation, and the room it runs in (checked
/// visible to the caller).
pub type ProvidedFuture<'a> =
    crate::chat::hooks::HookFuture<'a, Result<Option<Value>, ServiceError>>;

/// Commands another part adds to the table (a plugin's): listed after the built-in ones,
/// run through the provider once the room is checked. A built-in name always wins.
pub trait CommandProvider: Send + Sync {
    /// The commands it answers now.
    fn commands(&self) -> Vec<Listed>;
    /// Runs `name` (one of its commands) in `room`.
    fn run<'a>(
        &'a self,
        name: &'a str,
        inv: &'a Invocation<'a>,
        room: &'a Document,
    ) -> ProvidedFuture<'a>;
}

/// The Slash Commands service.
pub struct Commands {
    rooms: Arc<Rooms>,
    messages: Arc<Messages>,
    presence: Arc<Presence>,
    providers: std::sync::RwLock<Vec<Arc<dyn CommandProvider>>>,
}

impl Commands {
    pub fn new(rooms: Arc<Rooms>, messages: Arc<Messages>, presence: Arc<Presence>) -> Arc<Self> {
        Arc::new(Self {
            rooms,
            messages,
            presence,
            providers: Default::default(),
        })
    }

    /// Adds `provider`'s commands to the table.
    pub fn add_provider(&self, provider: Arc<dyn CommandProvider>) {
        self.providers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(provider);
    }

    fn providers(&self) -> Vec<Arc<dyn CommandProvider>> {
        self.providers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every command, in the table's order: the built-in ones, then the providers'.
    pub fn list(&self) -> Vec<Listed> {
        let mut all: Vec<Listed> = BUILT_IN
            .iter()
            .map(|c| Listed {
                command: c.command.into(),
                params: c.params.into(),
                description: c.description.into(),
            })
            .collect();
        for provider in self.providers() {
            for listed in provider.commands() {
                if !all.iter().any(|c| c.command == listed.command) {
                    all.push(listed);
                }
            }
        }
        all
    }

    fn find(name: &str) -> Option<&'static Command> {
        BUILT_IN.iter().find(|c| c.command == name)
    }

    /// Runs `/name params` in the invocation's room, which the caller must be able to see.
    pub async fn run(
        &self,
        name: &str,
        inv: Invocation<'_>,
    ) -> Result<Option<Value>, ServiceError> {
        let command = Self::find(name);
        let provider = match command {
            Some(_) => None,
            None => self
                .providers()
                .into_iter()
                .find(|p| p.commands().iter().any(|c| c.command == name)),
        };
        if command.is_none() && provider.is_none() {
            return Err(invalid(
                "error-invalid-command",
                "The command provided does not exist (or is disabled).",
            ));
        }
        if inv.params.len() > MAX_PARAMS {
            return Err(invalid(
                "error-invalid-params",
                "The parameters are too long",
            ));
        }
        let user = inv.call.require_user()?;
        let room = self.rooms.room(&inv.rid).await?;
        let visible = match &room {
            Some(room) => self.rooms.can_access(room, Some(user)).await?,
            None => false,
        };
        let (true, Some(room)) = (visible, room) else {
            return Err(invalid("error-invalid-room", "Invalid room"));
        };
        match (command, provider) {
            (Some(command), _) => self.act(command.action, &inv).await,
            (None, Some(provider)) => provider.run(name, &inv, &room).await,
            (None, None) => Ok(None),
        }
    }

    async fn named_room(&self, params: &str) -> Result<Document, ServiceError> {
        let name = target(params, '#')
            .ok_or_else(|| invalid("error-invalid-params", "A channel name is required"))?;
        match self.rooms.room_by_name(&name).await? {
            Some(room) => Ok(room),
            None => Err(invalid("error-invalid-room", "Invalid room")),
        }
    }

    fn username(params: &str) -> Result<String, ServiceError> {
        target(params, '@').ok_or_else(|| invalid("error-invalid-params", "A username is required"))
    }

    async fn say(&self, inv: &Invocation<'_>, rid: &str, msg: String) -> Result<(), ServiceError> {
        let out = Outgoing {
            id: None,
            rid: rid.to_owned(),
            msg,
            tmid: inv.tmid.clone(),
            tshow: false,
            ts: None,
            alias: None,
            avatar: None,
            emoji: None,
            attachments: None,
            custom_fields: None,
            groupable: None,
            files: None,
        };
        self.messages.send(inv.call, out).await.map(|_| ())
    }

    /// The usernames of `rid`'s members, the caller excepted.
    async fn members_of(
        &self,
        inv: &Invocation<'_>,
        rid: &str,
    ) -> Result<Vec<String>, ServiceError> {
        let me = inv.call.require_user()?;
        let (_, members) = self
            .rooms
            .users_of(inv.call.user(), rid, 0, Some(MAX_INVITED))
            .await?;
        Ok(members
            .into_iter()
            .filter(|u| u.get("_id").and_then(Value::as_str) != Some(me))
            .filter_map(|u| u.get("username").and_then(Value::as_str).map(str::to_owned))
            .collect())
    }

    async fn act(
        &self,
        action: Action,
        inv: &Invocation<'_>,
    ) -> Result<Option<Value>, ServiceError> {
        let (call, rid, params) = (inv.call, inv.rid.as_str(), inv.params.trim());
        match action {
            Action::Join => {
                let room = self.named_room(params).await?;
                let id = room.get("_id").and_then(Value::as_str).unwrap_or_default();
                self.rooms.join(call, id, None).await?;
            }
            Action::Leave => self.rooms.leave(call, rid).await?,
            Action::Invite => {
                let names: Vec<String> = params
                    .split_whitespace()
                    .map(|w| w.trim_start_matches('@').to_owned())
                    .filter(|w| !w.is_empty())
                    .collect();
                if names.is_empty() {
                    return Err(invalid("error-invalid-params", "A username is required"));
                }
                self.rooms.add_users(call, rid, &names).await?;
            }
            Action::Kick => {
                self.rooms
                    .remove_user(call, rid, &Self::username(params)?)
                    .await?
            }
            Action::Mute => {
                self.rooms
                    .set_muted(call, rid, &Self::username(params)?, true)
                    .await?
            }
            Action::Unmute => {
                self.rooms
                    .set_muted(call, rid, &Self::username(params)?, false)
                    .await?
            }
            Action::Topic => {
                self.rooms
                    .save_settings(call, rid, vec![RoomSetting::Topic(params.to_owned())])
                    .await?
            }
            Action::Archive | Action::Unarchive => {
                let id = if params.is_empty() {
                    rid.to_owned()
                } else {
                    let room = self.named_room(params).await?;
                    room.get("_id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                self.rooms
                    .set_archived(call, &id, action == Action::Archive)
                    .await?;
            }
            Action::Create => {
                let name = target(params, '#')
                    .ok_or_else(|| invalid("error-invalid-params", "A channel name is required"))?;
                let private = params.split_whitespace().nth(1) == Some("true");
                let kind = if private {
                    RoomKind::PrivateGroup
                } else {
                    RoomKind::Channel
                };
                self.rooms
                    .create(
                        call,
                        NewRoom {
                            kind,
                            name,
                            members: Vec::new(),
                            read_only: false,
                            team_id: None,
                        },
                    )
                    .await?;
            }
            Action::Msg => {
                let username = Self::username(params)?;
                let text = params
                    .split_once(char::is_whitespace)
                    .map(|(_, t)| t.trim())
                    .unwrap_or("");
                if text.is_empty() {
                    return Err(invalid("error-invalid-params", "A message is required"));
                }
                let dm = self.rooms.direct_message(call, &[username]).await?;
                let dm_id = dm
                    .get("_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let out = Invocation {
                    call,
                    rid: dm_id.clone(),
                    params: String::new(),
                    tmid: None,
                };
                self.say(&out, &dm_id, text.to_owned()).await?;
            }
            Action::Me => {
                if params.is_empty() {
                    return Ok(None);
                }
                self.say(inv, rid, format!("_{params}_")).await?;
            }
            Action::Status => {
                let user = call.require_user()?;
                let seq = self
                    .presence
                    .choose_status(user, None, Some(params))
                    .await?;
                call.record_write(seq);
            }
            Action::InviteAllTo | Action::InviteAllFrom => {
                let other = self.named_room(params).await?;
                let other_id = other
                    .get("_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let (from, to) = if action == Action::InviteAllTo {
                    (rid.to_owned(), other_id)
                } else {
                    (other_id, rid.to_owned())
                };
                let names = self.members_of(inv, &from).await?;
                if !names.is_empty() {
                    self.rooms.add_users(call, &to, &names).await?;
                }
            }
            Action::Append(face) => {
                let msg = if params.is_empty() {
                    face.to_owned()
                } else {
                    format!("{params} {face}")
                };
                self.say(inv, rid, msg).await?;
            }
            Action::Help => {
                let lines: Vec<Value> = BUILT_IN
                    .iter()
                    .map(|c| {
                        Value::String(format!("/{} {}", c.command, c.params).trim_end().to_owned())
                    })
                    .collect();
                return Ok(Some(Value::Array(lines)));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for c in BUILT_IN {
            assert!(seen.insert(c.command), "/{} twice", c.command);
            assert!(!c.command.starts_with('/'));
        }
        assert!(Commands::find("topic").is_some());
        assert!(Commands::find("nope").is_none());
    }

    #[test]
    fn a_target_loses_its_sigil_and_an_empty_one_is_none() {
        assert_eq!(target("@bob hi", '@').as_deref(), Some("bob"));
        assert_eq!(target("#general", '#').as_deref(), Some("general"));
        assert_eq!(target("general", '#').as_deref(), Some("general"));
        assert_eq!(target("  ", '#'), None);
        assert_eq!(target("@", '@'), None);
    }
}
