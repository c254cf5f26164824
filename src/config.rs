//! Settings: defaults < TOML file (`COMET_CONFIG` / `--config`) < environment < flags.
//!
//! Owns parsing and validation of what whoever runs comet may set. Each layer receives only
//! its own section.

use crate::server::ServerConfig;
use crate::session::{OutboundLimits, SessionConfig};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Why settings could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("configuration file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

/// Command line; every flag also reads the environment variable named beside it.
#[derive(Debug, Default, clap::Parser)]
#[command(
    name = "comet",
    version,
    about = "A realtime backend that speaks Meteor's DDP protocol"
)]
pub struct Cli {
    /// What to do; `serve` (the default) runs the server.
    #[arg(value_parser = ["serve"])]
    pub command: Option<String>,
    /// TOML configuration file.
    #[arg(long, env = "COMET_CONFIG")]
    pub config: Option<PathBuf>,
    /// Port to listen on (default 3000; 0 picks a free port).
    #[arg(long, env = "PORT")]
    pub port: Option<u16>,
    /// Address to listen on (default 0.0.0.0).
    #[arg(long, env = "BIND_IP")]
    pub bind_ip: Option<IpAddr>,
    /// Public URL of this server.
    #[arg(long, env = "ROOT_URL")]
    pub root_url: Option<String>,
    /// Directory of the embedded store (default ./comet-data).
    #[arg(long, env = "COMET_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// MongoDB connection string (MongoDB backend).
    #[arg(long, env = "MONGO_URL", hide_env_values = true)]
    pub mongo_url: Option<String>,
    /// MongoDB oplog connection string (the `local` database): tail the oplog instead of
    /// opening a change stream.
    #[arg(long, env = "MONGO_OPLOG_URL", hide_env_values = true)]
    pub mongo_oplog_url: Option<String>,
    /// Read post-images from change streams (`fullDocument: whenAvailable`; the collections
    /// need `changeStreamPreAndPostImages`) instead of looking documents up.
    #[arg(long, env = "COMET_MONGO_POST_IMAGES", value_parser = clap::builder::BoolishValueParser::new())]
    pub mongo_post_images: Option<bool>,
    /// Serve raw WebSockets only, no SockJS (also: `DISABLE_SOCKJS` set to any value).
    #[arg(long)]
    pub disable_sockjs: bool,
    /// `pretty` or `json`.
    #[arg(long, env = "LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Runtime worker threads (default: one per core).
    #[arg(long, env = "COMET_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Milliseconds of client silence before the server pings (0 disables heartbeats).
    #[arg(long, env = "COMET_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Milliseconds the client has to answer a ping.
    #[arg(long, env = "COMET_HEARTBEAT_TIMEOUT_MS")]
    pub heartbeat_timeout_ms: Option<u64>,
    /// Largest inbound message in bytes.
    #[arg(long, env = "COMET_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Bytes that may wait for one client before it is closed as a slow consumer.
    #[arg(long, env = "COMET_MAX_OUTBOUND_BYTES")]
    pub max_outbound_bytes: Option<usize>,
    /// Milliseconds queued frames may wait for a client before it is closed.
    #[arg(long, env = "COMET_MAX_DRAIN_DELAY_MS")]
    pub max_drain_delay_ms: Option<u64>,
    /// Live subscriptions per connection.
    #[arg(long, env = "COMET_MAX_SUBSCRIPTIONS")]
    pub max_subscriptions: Option<usize>,
    /// Live subscriptions of one user across all its connections (default 2000).
    #[arg(long, env = "COMET_MAX_SUBSCRIPTIONS_PER_USER")]
    pub max_subscriptions_per_user: Option<usize>,
    /// DDP sessions (WebSocket and SockJS) from one client address (default: a quarter of
    /// the connection cap; 0: no cap).
    #[arg(long, env = "COMET_MAX_SESSIONS_PER_ADDRESS")]
    pub max_sessions_per_address: Option<usize>,
    /// A bearer token `/metrics` asks for (`Authorization: Bearer <token>`); without one,
    /// `/metrics` answers only requests from this host that no proxy forwarded.
    #[arg(long, env = "COMET_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Method calls waiting to run per connection.
    #[arg(long, env = "COMET_MAX_QUEUED_METHODS")]
    pub max_queued_methods: Option<usize>,
    /// Milliseconds a method's `updated` waits at most for its writes' change events.
    #[arg(long, env = "COMET_WRITE_FENCE_TIMEOUT_MS")]
    pub write_fence_timeout_ms: Option<u64>,
    /// Milliseconds a SockJS session may stay without a receiver.
    #[arg(long, env = "COMET_SOCKJS_DISCONNECT_DELAY_MS")]
    pub sockjs_disconnect_delay_ms: Option<u64>,
    /// Milliseconds of send inactivity before a SockJS `h` frame.
    #[arg(long, env = "COMET_SOCKJS_HEARTBEAT_MS")]
    pub sockjs_heartbeat_ms: Option<u64>,
    /// Milliseconds for a complete HTTP request head; also the idle keep-alive timeout.
    #[arg(long, env = "COMET_REQUEST_HEAD_TIMEOUT_MS")]
    pub request_head_timeout_ms: Option<u64>,
    /// Milliseconds for an HTTP request body to arrive whole.
    #[arg(long, env = "COMET_REQUEST_BODY_TIMEOUT_MS")]
    pub request_body_timeout_ms: Option<u64>,
    /// Milliseconds for a WebSocket or SockJS session to send DDP's `connect`.
    #[arg(long, env = "COMET_CONNECT_TIMEOUT_MS")]
    pub connect_timeout_ms: Option<u64>,
    /// Concurrent TCP connections (default: the open-file limit less 128).
    #[arg(long, env = "COMET_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// SockJS sessions of the HTTP transports, in total.
    #[arg(long, env = "COMET_SOCKJS_MAX_SESSIONS")]
    pub sockjs_max_sessions: Option<usize>,
    /// SockJS sessions of the HTTP transports from one client address.
    #[arg(long, env = "COMET_SOCKJS_MAX_SESSIONS_PER_ADDRESS")]
    pub sockjs_max_sessions_per_address: Option<usize>,
    /// Register the test and benchmark methods and publications (`echo`, `test.*`).
    #[arg(long, env = "COMET_TEST_HANDLERS", value_parser = clap::builder::BoolishValueParser::new())]
    pub test_handlers: Option<bool>,
    /// Count the test handlers' calls against the rate limits like any other call (they
    /// stand outside them by default), so a benchmark measures the limiter's cost.
    #[arg(long, env = "COMET_RATE_LIMIT_TEST_HANDLERS", value_parser = clap::builder::BoolishValueParser::new())]
    pub rate_limit_test_handlers: Option<bool>,
    /// With the test handlers: one in-process hook that implements every hook point and
    /// changes nothing, so a benchmark measures what a hook costs the message path.
    #[arg(long, env = "COMET_BENCH_PASSTHROUGH_HOOK", value_parser = clap::builder::BoolishValueParser::new())]
    pub bench_passthrough_hook: Option<bool>,
    /// The first administrator's username (Rocket.Chat's variable), used on an empty store.
    #[arg(long, env = "ADMIN_USERNAME")]
    pub admin_username: Option<String>,
    #[arg(long, env = "ADMIN_PASS", hide_env_values = true)]
    pub admin_pass: Option<String>,
    #[arg(long, env = "ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// Proxies in front of comet: the client's address is read from `X-Forwarded-For`, this
    /// many entries from the right (Meteor's variable; 0: the socket's peer).
    #[arg(long, env = "HTTP_FORWARDED_COUNT")]
    pub http_forwarded_count: Option<usize>,
    /// bcrypt's cost for new password hashes (4 to 31; Meteor's is 10).
    #[arg(long, env = "COMET_BCRYPT_COST")]
    pub bcrypt_cost: Option<u32>,
    /// Milliseconds a user's closed connection still counts as online (a reconnect within
    /// it does not flap the status; default 3000).
    #[arg(long, env = "COMET_PRESENCE_GRACE_MS")]
    pub presence_grace_ms: Option<u64>,
    /// Milliseconds between this process's presence heartbeats and sweeps of connections
    /// left by processes gone (default 10000; a process is gone after three missed).
    #[arg(long, env = "COMET_PRESENCE_HEARTBEAT_MS")]
    pub presence_heartbeat_ms: Option<u64>,
    /// Where server plugins are installed and found at start (default `<data dir>/plugins`).
    #[arg(long, env = "COMET_PLUGIN_DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// Plugins' development mode: a plugin is restarted when its folder changes, and a
    /// plugin that stops answering health checks (a debugger holds it) is left running.
    #[arg(long, env = "COMET_PLUGIN_DEV", value_parser = clap::builder::BoolishValueParser::new())]
    pub plugin_dev: Option<bool>,
    /// The broker between instances (Rocket.Chat's variable): `nats://host:port` shares
    /// events that mirror no data with every instance over NATS; unset, this process alone.
    #[arg(long, env = "TRANSPORTER", hide_env_values = true)]
    pub transporter: Option<String>,
    /// The address other instances and operators see for this one in `instances`
    /// (default: `<bind ip>:<port>`).
    #[arg(long, env = "INSTANCE_IP")]
    pub instance_address: Option<String>,
    /// Milliseconds a deployment-wide job's lease lasts (default 30000): how long its jobs
    /// wait for another instance to take over when the holder dies.
    #[arg(long, env = "COMET_LEASE_MS")]
    pub lease_ms: Option<u64>,
    /// Milliseconds between rounds of the deployment's upkeep (default 900000: expired
    /// tokens, old trash, unconfirmed uploads).
    #[arg(long, env = "COMET_UPKEEP_MS")]
    pub upkeep_ms: Option<u64>,
}

/// The `[server]` table of the TOML file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServer {
    pub port: Option<u16>,
    pub bind_ip: Option<IpAddr>,
    pub root_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub disable_sockjs: Option<bool>,
    pub log_format: Option<String>,
    pub worker_threads: Option<usize>,
    pub heartbeat_interval_ms: Option<u64>,
    pub heartbeat_timeout_ms: Option<u64>,
    pub max_message_bytes: Option<usize>,
    pub max_outbound_bytes: Option<usize>,
    pub max_drain_delay_ms: Option<u64>,
    pub max_subscriptions: Option<usize>,
    pub max_subscriptions_per_user: Option<usize>,
    pub max_sessions_per_address: Option<usize>,
    pub max_queued_methods: Option<usize>,
    pub sockjs_disconnect_delay_ms: Option<u64>,
    pub sockjs_heartbeat_ms: Option<u64>,
    pub test_handlers: Option<bool>,
    pub request_head_timeout_ms: Option<u64>,
    pub request_body_timeout_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub max_connections: Option<usize>,
    pub sockjs_max_sessions: Option<usize>,
    pub sockjs_max_sessions_per_address: Option<usize>,
    pub write_fence_timeout_ms: Option<u64>,
    pub plugin_dir: Option<PathBuf>,
    pub plugin_dev: Option<bool>,
    pub transporter: Option<String>,
    pub instance_address: Option<String>,
}

/// The whole TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: FileServer,
    #[serde(default)]
    pub publications: Vec<crate::engine::declarative::PublicationConfig>,
    #[serde(default)]
    pub collections: Vec<crate::engine::declarative::CollectionConfig>,
}

/// Effective settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub bind_ip: IpAddr,
    pub port: u16,
    pub root_url: Option<String>,
    pub data_dir: PathBuf,
    pub mongo_url: Option<String>,
    pub mongo_oplog_url: Option<String>,
    pub mongo_post_images: bool,
    pub log_json: bool,
    pub worker_threads: Option<usize>,
    pub test_handlers: bool,
    /// Whether the test handlers' calls count against the rate limits.
    pub rate_limit_test_handlers: bool,
    /// Whether a hook that changes nothing stands at every hook point (test handlers only).
    pub bench_passthrough_hook: bool,
    /// Where plugins live, and whether they run in development mode.
    pub plugins: crate::chat::plugins::PluginConfig,
    /// The broker between instances (`nats://...`), when several serve one deployment.
    pub transporter: Option<String>,
    /// How this instance is named to the others in `instances`, when not its bind address.
    pub instance_address: Option<String>,
    /// How long a deployment-wide job's lease lasts.
    pub lease: std::time::Duration,
    /// How often the deployment's upkeep runs.
    pub upkeep_every: std::time::Duration,
    pub accounts: crate::chat::accounts::AccountsConfig,
    pub presence: crate::chat::presence::PresenceConfig,
    pub server: ServerConfig,
    pub session: SessionConfig,
    pub publications: Vec<crate::engine::declarative::PublicationConfig>,
    pub collections: Vec<crate::engine::declarative::CollectionConfig>,
    /// The configuration file and its text, to point at lines in later errors.
    pub config_source: Option<(PathBuf, String)>,
    /// Rocket.Chat's `OVERWRITE_SETTING_<id>=<value>`: settings forced at every start.
    pub setting_overrides: Vec<(String, String)>,
}

/// The `OVERWRITE_SETTING_<id>` variables among `vars`, as (id, text), sorted by id.
pub fn setting_overrides(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = vars
        .into_iter()
        .filter_map(|(name, value)| {
            let id = name.strip_prefix("OVERWRITE_SETTING_")?;
            (!id.is_empty()).then(|| (id.to_owned(), value))
        })
        .collect();
    found.sort();
    found
}

impl Settings {
    /// Merges the layers. `env_disable_sockjs` is whether `DISABLE_SOCKJS` holds any value.
    pub fn resolve(cli: Cli, env_disable_sockjs: bool) -> Result<Self, ConfigError> {
        let (file, config_source) = match &cli.config {
            Some(path) => {
                let (file, text) = load_file(path)?;
                (file, Some((path.clone(), text)))
            }
            None => (FileConfig::default(), None),
        };
        let (publications, collections) = (file.publications, file.collections);
        let f = file.server;
        let log_format = cli
            .log_format
            .or(f.log_format)
            .unwrap_or_else(|| "pretty".into());
        let log_json = match log_format.as_str() {
            "pretty" => false,
            "json" => true,
            other => {
                return Err(ConfigError::Invalid {
                    name: "LOG_FORMAT",
                    message: format!("expected pretty or json, got {other:?}"),
                })
            }
        };
        let defaults_session = SessionConfig::default();
        let defaults_server = ServerConfig::default();
        let ms = Duration::from_millis;
        let session = SessionConfig {
            heartbeat_interval: cli
                .heartbeat_interval_ms
                .or(f.heartbeat_interval_ms)
                .map_or(defaults_session.heartbeat_interval, ms),
            heartbeat_timeout: cli
                .heartbeat_timeout_ms
                .or(f.heartbeat_timeout_ms)
                .map_or(defaults_session.heartbeat_timeout, ms),
            max_subscriptions: cli
                .max_subscriptions
                .or(f.max_subscriptions)
                .unwrap_or(defaults_session.max_subscriptions),
            max_subscriptions_per_user: cli
                .max_subscriptions_per_user
                .or(f.max_subscriptions_per_user)
                .unwrap_or(defaults_session.max_subscriptions_per_user),
            max_queued_methods: cli
                .max_queued_methods
                .or(f.max_queued_methods)
                .unwrap_or(defaults_session.max_queued_methods),
            max_queued_messages: defaults_session.max_queued_messages,
            write_fence_timeout: cli
                .write_fence_timeout_ms
                .or(f.write_fence_timeout_ms)
                .map_or(defaults_session.write_fence_timeout, ms),
            outbound: OutboundLimits {
                max_queued_bytes: cli
                    .max_outbound_bytes
                    .or(f.max_outbound_bytes)
                    .unwrap_or(defaults_session.outbound.max_queued_bytes),
                max_drain_delay: cli
                    .max_drain_delay_ms
                    .or(f.max_drain_delay_ms)
                    .map_or(defaults_session.outbound.max_drain_delay, ms),
            },
        };
        let server = ServerConfig {
            max_message_bytes: cli
                .max_message_bytes
                .or(f.max_message_bytes)
                .unwrap_or(defaults_server.max_message_bytes),
            sockjs_enabled: !(cli.disable_sockjs
                || env_disable_sockjs
                || f.disable_sockjs.unwrap_or(false)),
            sockjs_heartbeat: cli
                .sockjs_heartbeat_ms
                .or(f.sockjs_heartbeat_ms)
                .map_or(defaults_server.sockjs_heartbeat, ms),
            sockjs_disconnect_delay: cli
                .sockjs_disconnect_delay_ms
                .or(f.sockjs_disconnect_delay_ms)
                .map_or(defaults_server.sockjs_disconnect_delay, ms),
            request_head_timeout: cli
                .request_head_timeout_ms
                .or(f.request_head_timeout_ms)
                .map_or(defaults_server.request_head_timeout, ms),
            request_body_timeout: cli
                .request_body_timeout_ms
                .or(f.request_body_timeout_ms)
                .map_or(defaults_server.request_body_timeout, ms),
            connect_timeout: cli
                .connect_timeout_ms
                .or(f.connect_timeout_ms)
                .map_or(defaults_server.connect_timeout, ms),
            max_connections: cli
                .max_connections
                .or(f.max_connections)
                .unwrap_or(defaults_server.max_connections),
            sockjs_max_sessions: cli
                .sockjs_max_sessions
                .or(f.sockjs_max_sessions)
                .unwrap_or(defaults_server.sockjs_max_sessions),
            sockjs_max_sessions_per_address: cli
                .sockjs_max_sessions_per_address
                .or(f.sockjs_max_sessions_per_address)
                .unwrap_or(defaults_server.sockjs_max_sessions_per_address),
            forwarded_count: cli.http_forwarded_count.unwrap_or(0),
            metrics_token: cli
                .metrics_token
                .filter(|t| !t.is_empty())
                .map(crate::model::secret::Secret),
            ..defaults_server
        };
        let server = ServerConfig {
            max_sessions_per_address: cli
                .max_sessions_per_address
                .or(f.max_sessions_per_address)
                .unwrap_or(server.max_connections / 4),
            ..server
        };
        let settings = Settings {
            bind_ip: cli
                .bind_ip
                .or(f.bind_ip)
                .unwrap_or(IpAddr::from([0, 0, 0, 0])),
            port: cli.port.or(f.port).unwrap_or(3000),
            root_url: cli.root_url.or(f.root_url),
            data_dir: cli
                .data_dir
                .or(f.data_dir)
                .unwrap_or_else(|| PathBuf::from("./comet-data")),
            mongo_url: cli.mongo_url,
            mongo_oplog_url: cli.mongo_oplog_url,
            mongo_post_images: cli.mongo_post_images.unwrap_or(false),
            log_json,
            worker_threads: cli.worker_threads.or(f.worker_threads),
            test_handlers: cli.test_handlers.or(f.test_handlers).unwrap_or(false),
            rate_limit_test_handlers: cli.rate_limit_test_handlers.unwrap_or(false),
            bench_passthrough_hook: cli.bench_passthrough_hook.unwrap_or(false),
            plugins: crate::chat::plugins::PluginConfig {
                dir: cli.plugin_dir.or(f.plugin_dir),
                dev_mode: cli.plugin_dev.or(f.plugin_dev).unwrap_or(false),
            },
            transporter: cli
                .transporter
                .or(f.transporter)
                .filter(|t| !t.trim().is_empty()),
            instance_address: cli.instance_address.or(f.instance_address),
            lease: std::time::Duration::from_millis(cli.lease_ms.unwrap_or(30_000).max(300)),
            upkeep_every: std::time::Duration::from_millis(
                cli.upkeep_ms.unwrap_or(900_000).max(100),
            ),
            accounts: crate::chat::accounts::AccountsConfig {
                bcrypt_cost: cli.bcrypt_cost.unwrap_or(10),
                admin: match (cli.admin_username, cli.admin_pass) {
                    (Some(username), Some(password)) => Some(crate::chat::accounts::AdminSeed {
                        username,
                        password: crate::model::secret::Secret(password),
                        email: cli.admin_email,
                    }),
                    _ => None,
                },
                ..Default::default()
            },
            presence: {
                let defaults = crate::chat::presence::PresenceConfig::default();
                crate::chat::presence::PresenceConfig {
                    grace: cli.presence_grace_ms.map_or(defaults.grace, ms),
                    heartbeat: cli
                        .presence_heartbeat_ms
                        .filter(|h| *h > 0)
                        .map_or(defaults.heartbeat, ms),
                }
            },
            server,
            session,
            publications,
            collections,
            config_source,
            setting_overrides: Vec::new(),
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, message: &str| {
            Err(ConfigError::Invalid {
                name,
                message: message.to_owned(),
            })
        };
        if !(4..=31).contains(&self.accounts.bcrypt_cost) {
            return invalid("COMET_BCRYPT_COST", "must be between 4 and 31");
        }
        if self.server.max_message_bytes < 1024 {
            return invalid("max_message_bytes", "must be at least 1024");
        }
        if self.session.outbound.max_queued_bytes < self.server.max_message_bytes.min(64 * 1024) {
            return invalid("max_outbound_bytes", "must be at least 64 KiB");
        }
        if self.session.max_subscriptions == 0 {
            return invalid("max_subscriptions", "must be at least 1");
        }
        for (name, value) in [
            ("request_head_timeout_ms", self.server.request_head_timeout),
            ("request_body_timeout_ms", self.server.request_body_timeout),
            ("connect_timeout_ms", self.server.connect_timeout),
        ] {
            if value.is_zero() {
                return invalid(name, "must be positive");
            }
        }
        for (name, value) in [
            ("max_connections", self.server.max_connections),
            ("sockjs_max_sessions", self.server.sockjs_max_sessions),
            (
                "sockjs_max_sessions_per_address",
                self.server.sockjs_max_sessions_per_address,
            ),
        ] {
            if value == 0 {
                return invalid(name, "must be at least 1");
            }
        }
        if self.worker_threads == Some(0) {
            return invalid("worker_threads", "must be at least 1");
        }
        if !self.session.heartbeat_interval.is_zero() && self.session.heartbeat_timeout.is_zero() {
            return invalid(
                "heartbeat_timeout_ms",
                "must be positive when heartbeats are on",
            );
        }
        Ok(())
    }
}

fn load_file(path: &PathBuf) -> Result<(FileConfig, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
        path: path.clone(),
        cause,
    })?;
    let file = parse_file(&text).map_err(|message| ConfigError::Parse {
        path: path.clone(),
        message,
    })?;
    Ok((file, text))
}

/// The line of the `occurrence`-th (from 0) `name = "<name>"` in a configuration text, for
/// errors found after parsing.
pub fn line_of_name(text: &str, name: &str, occurrence: usize) -> Option<usize> {
    let quoted = format!("\"{name}\"");
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("name") && l.contains(&quoted))
        .nth(occurrence)
        .map(|(i, _)| i + 1)
}

/// Parses TOML text; the error names the line and the problem.
pub fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|err| {
        let line = err
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        match line {
            Some(line) => format!("line {line}: {}", err.message()),
            None => err.message().to_owned(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = std::env::temp_dir().join(format!("comet-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "[server]\nport = 4000\nheartbeat_interval_ms = 1000\n",
        )
        .unwrap();
        let cli = Cli {
            config: Some(path.clone()),
            port: Some(5000),
            ..Cli::default()
        };
        let s = Settings::resolve(cli, false).unwrap();
        assert_eq!(s.port, 5000);
        assert_eq!(s.session.heartbeat_interval, Duration::from_secs(1));
        assert!(s.server.sockjs_enabled);
        let s = Settings::resolve(
            Cli {
                config: Some(path),
                ..Cli::default()
            },
            true,
        )
        .unwrap();
        assert_eq!(s.port, 4000);
        assert!(!s.server.sockjs_enabled);
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = parse_file("[server]\nport = 1\nfrobnicate = true\n").unwrap_err();
        assert!(err.starts_with("line 3:"), "{err}");
        assert!(err.contains("frobnicate"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        let cli = Cli {
            max_message_bytes: Some(10),
            ..Cli::default()
        };
        assert!(matches!(
            Settings::resolve(cli, false),
            Err(ConfigError::Invalid {
                name: "max_message_bytes",
                ..
            })
        ));
    }
}
