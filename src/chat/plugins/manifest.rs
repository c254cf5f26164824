//! A plugin's manifest (`plugin.json`): who it is, how it is started, which hooks it
//! implements, how its *will* hooks behave when it does not answer, its deadlines, its
//! memory cap, its settings and its slash commands.
//!
//! Owns reading and checking the manifest: everything in it is the author's text, so every
//! field is bounded and an id is a plain name before it becomes a folder, a user name or a
//! key. It must not start anything.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The manifest's file name in a plugin's folder.
pub const FILE: &str = "plugin.json";

/// Longest manifest read.
const MAX_BYTES: u64 = 256 * 1024;

/// Every hook a plugin may declare, by its wire name.
pub const HOOKS: &[&str] = &[
    "OnActivate",
    "OnDeactivate",
    "OnConfigurationChange",
    "MessageWillBePosted",
    "MessageWillBeUpdated",
    "MessageHasBeenPosted",
    "MessageHasBeenUpdated",
    "MessageHasBeenDeleted",
    "ReactionHasBeenAdded",
    "ReactionHasBeenRemoved",
    "RoomHasBeenCreated",
    "UserHasJoinedRoom",
    "UserHasLeftRoom",
    "UserHasBeenCreated",
    "UserWillLogIn",
    "UserHasLoggedIn",
    "ExecuteCommand",
    "ServeHTTP",
    "OnPluginClusterEvent",
    "FileWillBeUploaded",
    "RunJob",
];

/// What a *will* hook does when its plugin misses the deadline or is not running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// The write goes through unchanged.
    #[default]
    FailOpen,
    /// The write is refused with a clear error.
    FailClosed,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::FailOpen => "fail_open",
            Policy::FailClosed => "fail_closed",
        }
    }
}

/// One setting of the plugin's configuration.
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SettingSchema {
    pub key: String,
    /// `text`, `bool`, `number` or `secret` (a text never shown back).
    #[serde(rename = "type", default = "text_type")]
    pub kind: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub help_text: Option<String>,
    #[serde(default)]
    pub default: Option<serde_json::Value>,
}

fn text_type() -> String {
    "text".into()
}

/// A slash command the plugin answers through `ExecuteCommand`.
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    pub command: String,
    #[serde(default)]
    pub params: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    /// Executables by `<os>-<arch>` (`linux-amd64`), relative to the folder.
    #[serde(default)]
    executables: BTreeMap<String, String>,
    #[serde(default)]
    executable: Option<String>,
    /// A command line (`python3 main.py`): words split on spaces.
    #[serde(default)]
    command: Option<CommandLine>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CommandLine {
    Words(Vec<String>),
    Line(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    id: String,
    name: Option<String>,
    version: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    min_server_version: Option<String>,
    server: RawServer,
    #[serde(default)]
    hooks: Vec<String>,
    #[serde(default)]
    hook_policy: Policy,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    hook_deadline_ms: Option<u64>,
    #[serde(default)]
    http_deadline_ms: Option<u64>,
    #[serde(default)]
    memory_limit_mb: Option<u64>,
    #[serde(default)]
    settings_schema: Vec<SettingSchema>,
    #[serde(default)]
    commands: Vec<CommandSpec>,
}

/// A checked manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub id: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub min_server_version: Option<String>,
    /// The program and its arguments, the program relative to the folder when it names a
    /// file there.
    pub argv: Vec<String>,
    pub hooks: Vec<String>,
    pub policy: Policy,
    /// Lower runs first; ties by id.
    pub priority: i64,
    pub hook_deadline: Duration,
    pub http_deadline: Duration,
    pub memory_limit_mb: u64,
    pub settings: Vec<SettingSchema>,
    pub commands: Vec<CommandSpec>,
}

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ManifestError(pub String);

fn bad(text: impl Into<String>) -> ManifestError {
    ManifestError(text.into())
}

/// Whether `id` is a plugin id: 2 to 64 of lowercase letters, digits, `.`, `-` and `_`,
/// starting with a letter or digit (it names a folder, a user and keys).
pub fn valid_id(id: &str) -> bool {
    (2..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && !id.contains("..")
}

/// `<os>-<arch>` as manifests name platforms (Go's names, which Mattermost's use).
pub fn platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("{}-{arch}", std::env::consts::OS)
}

/// Compares dotted versions numerically (`0.10.0` > `0.9.9`); parts that are not numbers
/// count as 0.
pub fn version_at_least(have: &str, want: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> {
        v.trim_start_matches('v')
            .split(['.', '-', '+'])
            .take(3)
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    let (mut a, mut b) = (parts(have), parts(want));
    a.resize(3, 0);
    b.resize(3, 0);
    a >= b
}

impl Manifest {
    /// Reads and checks `<folder>/plugin.json`.
    pub fn read(folder: &std::path::Path) -> Result<Self, ManifestError> {
        use std::io::Read;
        let path = folder.join(FILE);
        let file = std::fs::File::open(&path).map_err(|e| bad(format!("no {FILE}: {e}")))?;
        let mut text = String::new();
        file.take(MAX_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| bad(format!("{FILE} cannot be read: {e}")))?;
        if text.len() as u64 > MAX_BYTES {
            return Err(bad(format!("{FILE} is over {MAX_BYTES} bytes")));
        }
        Self::parse(&text)
    }

    /// Checks a manifest's text.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let raw: Raw =
            serde_json::from_str(text).map_err(|e| bad(format!("{FILE} is not valid: {e}")))?;
        if !valid_id(&raw.id) {
            return Err(bad(
                "id must be 2 to 64 lowercase letters, digits, '.', '-' or '_'",
            ));
        }
        if raw.version.is_empty() || raw.version.len() > 32 {
            return Err(bad("version must be 1 to 32 characters"));
        }
        if let Some(min) = &raw.min_server_version {
            if !version_at_least(env!("CARGO_PKG_VERSION"), min) {
                return Err(bad(format!(
                    "needs comet {min} or later (this is {})",
                    env!("CARGO_PKG_VERSION")
                )));
            }
        }
        for hook in &raw.hooks {
            if !HOOKS.contains(&hook.as_str()) {
                return Err(bad(format!("unknown hook {hook:?}")));
            }
        }
        let argv = match (
            raw.server.executables.get(&platform()),
            raw.server.executable,
            raw.server.command,
        ) {
            (Some(exe), _, _) => vec![exe.clone()],
            (None, Some(exe), _) => vec![exe],
            (None, None, Some(CommandLine::Words(words))) => words,
            (None, None, Some(CommandLine::Line(line))) => {
                line.split_whitespace().map(str::to_owned).collect()
            }
            (None, None, None) => {
                return Err(bad(format!(
                    "server names no executable for {} and no command",
                    platform()
                )))
            }
        };
        if argv.is_empty() || argv.iter().any(|w| w.is_empty() || w.contains('\0')) {
            return Err(bad("server command is empty"));
        }
        if argv[0].contains("..") || argv[0].starts_with('/') && !argv[0].starts_with("/usr/") {
            return Err(bad(
                "the executable must be in the plugin's folder or a program on the PATH",
            ));
        }
        let deadline = |ms: Option<u64>, default: u64| {
            Duration::from_millis(ms.unwrap_or(default).clamp(10, 300_000))
        };
        let mut keys = std::collections::HashSet::new();
        for setting in &raw.settings_schema {
            if setting.key.is_empty()
                || setting.key.len() > 64
                || !keys.insert(setting.key.clone())
                || !["text", "bool", "number", "secret"].contains(&setting.kind.as_str())
            {
                return Err(bad(format!(
                    "setting {:?} needs a unique key of at most 64 characters and a type of text, bool, number or secret",
                    setting.key
                )));
            }
        }
        for command in &raw.commands {
            let name = &command.command;
            if name.is_empty()
                || name.len() > 32
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            {
                return Err(bad(format!("command {name:?} is not a plain name")));
            }
        }
        if !raw.commands.is_empty() && !raw.hooks.iter().any(|h| h == "ExecuteCommand") {
            return Err(bad("commands need the ExecuteCommand hook"));
        }
        Ok(Manifest {
            name: raw
                .name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| raw.id.clone()),
            id: raw.id,
            version: raw.version,
            description: raw.description.unwrap_or_default(),
            min_server_version: raw.min_server_version,
            argv,
            hooks: raw.hooks,
            policy: raw.hook_policy,
            priority: raw.priority.unwrap_or(100),
            hook_deadline: deadline(raw.hook_deadline_ms, 2_000),
            http_deadline: deadline(raw.http_deadline_ms, 30_000),
            memory_limit_mb: raw.memory_limit_mb.unwrap_or(512).clamp(16, 65_536),
            settings: raw.settings_schema,
            commands: raw.commands,
        })
    }

    /// Whether the plugin implements `hook`.
    pub fn implements(&self, hook: &str) -> bool {
        self.hooks.iter().any(|h| h == hook)
    }

    /// The plugin's bot user's name.
    pub fn bot_username(&self) -> String {
        format!("{}.bot", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_is_checked_field_by_field() {
        let ok = Manifest::parse(
            r#"{"id":"filter","version":"1.0.0","server":{"command":"python3 main.py"},
                "hooks":["MessageWillBePosted"],"hook_policy":"fail_closed","priority":5,
                "hook_deadline_ms":300}"#,
        )
        .unwrap();
        assert_eq!(ok.argv, vec!["python3", "main.py"]);
        assert_eq!(ok.policy, Policy::FailClosed);
        assert_eq!(ok.hook_deadline, Duration::from_millis(300));
        assert_eq!(ok.http_deadline, Duration::from_secs(30));
        assert!(ok.implements("MessageWillBePosted") && !ok.implements("ServeHTTP"));
        for (text, says) in [
            (
                r#"{"id":"../x","version":"1","server":{"command":"a"}}"#,
                "id must",
            ),
            (
                r#"{"id":"Xx","version":"1","server":{"command":"a"}}"#,
                "id must",
            ),
            (r#"{"id":"ok","version":"1","server":{}}"#, "no executable"),
            (
                r#"{"id":"ok","version":"1","server":{"command":"../../bin/sh"}}"#,
                "folder",
            ),
            (
                r#"{"id":"ok","version":"1","server":{"command":"a"},"hooks":["Nope"]}"#,
                "unknown hook",
            ),
            (
                r#"{"id":"ok","version":"1","server":{"command":"a"},"min_server_version":"99.0.0"}"#,
                "needs comet",
            ),
            (
                r#"{"id":"ok","version":"1","server":{"command":"a"},"commands":[{"command":"x"}]}"#,
                "ExecuteCommand",
            ),
            (
                r#"{"id":"ok","version":"1","server":{"command":"a"},"commands":[{"command":"a b"}],"hooks":["ExecuteCommand"]}"#,
                "plain name",
            ),
            (
                r#"{"id":"ok","version":"1","server":{"command":"a"},"surprise":1}"#,
                "unknown field",
            ),
        ] {
            let err = Manifest::parse(text).unwrap_err();
            assert!(err.0.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn versions_compare_by_number() {
        assert!(version_at_least("0.10.0", "0.9.9"));
        assert!(version_at_least("1.0.0", "1"));
        assert!(!version_at_least("0.1.0", "0.2.0"));
    }
}
