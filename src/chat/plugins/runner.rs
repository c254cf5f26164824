//! One plugin's process, from start to end, and the supervision around it: the handshake
//! with its deadline, health checks, the memory cap, restarts with back-off, the end of a
//! crash loop, development-mode reloads, and a stop with `OnDeactivate` and a grace period.
//!
//! Owns the child process: it is started in its own process group with a clean
//! environment and `RLIMIT_DATA` at the plugin's memory limit, its resident memory is
//! watched as well, its stderr goes to comet's log under the plugin's id, and whatever way
//! it ends it is killed with its group and reaped (no zombie, no orphan). It must not know
//! what hooks or API calls mean: frames go to [`super::api`], answers to the [`Peer`].

use super::figures::Figure;
use super::manifest::Manifest;
use super::wire::{self, Frame, Peer, OUTBOX};
use super::{Plugin, Plugins, State};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// How long a new process has to answer `Hello` and `OnActivate`.
pub const HANDSHAKE: Duration = Duration::from_secs(10);
/// How often a running plugin is asked `HealthCheck`, how long it has to answer, and how
/// many misses in a row end it.
const HEALTH_EVERY: Duration = Duration::from_secs(10);
const HEALTH_DEADLINE: Duration = Duration::from_secs(5);
const HEALTH_MISSES: u32 = 3;
/// How often resident memory is read.
const MEMORY_EVERY: Duration = Duration::from_millis(250);
/// How long a stopping plugin has for `OnDeactivate`, and then to exit once its input closes.
const DEACTIVATE_DEADLINE: Duration = Duration::from_secs(5);
const EXIT_GRACE: Duration = Duration::from_secs(5);
/// Crashes within [`CRASH_WINDOW`] after which a plugin is disabled.
pub const MAX_CRASHES: usize = 3;
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// First wait before a restart; it doubles with each crash in the window, up to the last.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const LAST_BACKOFF: Duration = Duration::from_secs(30);
/// Plugin calls into comet answered at once; beyond it they wait.
const API_IN_FLIGHT: usize = 64;
/// Longest stderr line logged, and most lines logged a second.
const LOG_LINE: usize = 2000;
const LOG_LINES_PER_SECOND: u32 = 100;
/// How often a development-mode plugin's folder is looked at.
const DEV_POLL: Duration = Duration::from_secs(1);

/// How one run of the process ended.
#[derive(Debug, PartialEq)]
pub enum Exit {
    /// Stopped on purpose (disabled, removed, comet shutting down).
    Stopped,
    /// Its folder changed in development mode: start it again.
    Reload,
    /// It died or had to be ended.
    Crashed(String),
}

/// Runs `plugin` until stopped, restarting it after crashes, and disabling it when it keeps
/// crashing.
pub async fn supervise(plugins: Arc<Plugins>, plugin: Arc<Plugin>, stop: CancellationToken) {
    let mut crashes: VecDeque<Instant> = VecDeque::new();
    loop {
        plugin.set_state(State::Starting, None);
        let exit = run_once(&plugins, &plugin, &stop).await;
        match exit {
            Exit::Stopped => break,
            Exit::Reload => {
                tracing::info!(plugin = %plugin.id, "plugin folder changed: restarting");
                if let Err(err) = plugin.reload_manifest() {
                    plugins
                        .fail(&plugin, format!("its manifest is invalid: {err}"))
                        .await;
                    break;
                }
                continue;
            }
            Exit::Crashed(reason) => {
                plugin.counters.count(Figure::Crashes);
                let now = Instant::now();
                crashes.push_back(now);
                while crashes
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
                {
                    crashes.pop_front();
                }
                tracing::warn!(plugin = %plugin.id, %reason, crashes = crashes.len(), "plugin crashed");
                if crashes.len() >= MAX_CRASHES {
                    plugins
                        .fail(
                            &plugin,
                            format!(
                                "crashed {} times within {} s; last: {reason}",
                                crashes.len(),
                                CRASH_WINDOW.as_secs()
                            ),
                        )
                        .await;
                    break;
                }
                plugin.set_state(State::Restarting, Some(reason));
                let wait = FIRST_BACKOFF
                    .saturating_mul(1 << (crashes.len() - 1).min(10))
                    .min(LAST_BACKOFF);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// The child, and how to end it.
struct Child {
    pid: u32,
    /// Cancelled once the process has ended and been reaped; `status` then says how.
    exited: CancellationToken,
    status: Arc<std::sync::Mutex<String>>,
}

impl Child {
    /// Kills the process and everything it started (its process group).
    fn kill(&self) {
        // The child leads its own group (process_group(0)): the group's id is its pid. A
        // group already gone answers ESRCH, which is fine.
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }

    async fn wait(&self) -> String {
        self.exited.cancelled().await;
        self.status()
    }

    fn status(&self) -> String {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Starts the process: in the plugin's folder, its own process group, a clean environment,
/// its memory capped.
fn spawn(
    dir: &Path,
    manifest: &Manifest,
    plugin_id: &str,
    dev_mode: bool,
) -> std::io::Result<tokio::process::Child> {
    let program = &manifest.argv[0];
    let local = dir.join(program);
    let program = if program.contains('/') || local.is_file() {
        local
    } else {
        std::path::PathBuf::from(program)
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(&manifest.argv[1..])
        .current_dir(dir)
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    // Only what a runtime needs to start: never comet's own secrets (MONGO_URL, ...).
    for name in ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
        .env("COMET_PLUGIN_ID", plugin_id)
        .env("COMET_PLUGIN_PROTOCOL", super::PROTOCOL_VERSION.to_string())
        .env("COMET_PLUGIN_DEV", if dev_mode { "1" } else { "0" })
        .env("PYTHONUNBUFFERED", "1");
    tracing::debug!(plugin = %plugin_id, "starting plugin process");
    let child = command.spawn()?;
    // The kernel's cap on the process's data (heap and private mappings), set as soon as it
    // exists; the resident-memory watch covers the moment before. RLIMIT_AS would be
    // simpler, but runtimes that reserve address space up front (Node's V8) cannot start
    // under it.
    let limit = manifest.memory_limit_mb.saturating_mul(1 << 20);
    if let Some(pid) = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    {
        let cap = rustix::process::Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        };
        if let Err(err) = rustix::process::prlimit(Some(pid), rustix::process::Resource::Data, cap)
        {
            tracing::warn!(plugin = %plugin_id, cause = %err, "memory cap not set; the resident-memory watch still applies");
        }
    }
    Ok(child)
}

/// The resident memory of `pid` in bytes, from `/proc`.
fn resident_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// A summary of the folder's files (newest change, how many): what development mode
/// compares to see an edit.
fn fingerprint(dir: &Path) -> (std::time::SystemTime, usize) {
    let mut newest = std::time::UNIX_EPOCH;
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            count += 1;
            if count > 10_000 {
                return (newest, count);
            }
            let Ok(meta) = entry.metadata() else { continue };
            if let Ok(modified) = meta.modified() {
                newest = newest.max(modified);
            }
            let name = entry.file_name();
            if meta.is_dir() && !name.to_string_lossy().starts_with('.') && name != "__pycache__" {
                stack.push(entry.path());
            }
        }
    }
    (newest, count)
}

/// One run of the process: start, handshake, serve until it ends or is stopped.
async fn run_once(plugins: &Arc<Plugins>, plugin: &Arc<Plugin>, stop: &CancellationToken) -> Exit {
    let manifest = plugin.manifest();
    let dev_mode = plugins.config.dev_mode;
    let mut process = match spawn(&plugin.dir, &manifest, &plugin.id, dev_mode) {
        Ok(process) => process,
        Err(err) => return Exit::Crashed(format!("cannot start {:?}: {err}", manifest.argv[0])),
    };
    let Some(pid) = process.id() else {
        return Exit::Crashed("exited at once".into());
    };
    let (Some(stdin), Some(stdout), Some(stderr)) = (
        process.stdin.take(),
        process.stdout.take(),
        process.stderr.take(),
    ) else {
        return Exit::Crashed("no pipes".into());
    };
    let child = Child {
        pid,
        exited: CancellationToken::new(),
        status: Default::default(),
    };
    let (exited, status) = (child.exited.clone(), child.status.clone());
    tokio::spawn(async move {
        let outcome = match process.wait().await {
            Ok(outcome) => outcome.to_string(),
            Err(err) => format!("cannot be waited for: {err}"),
        };
        *status.lock().unwrap_or_else(|p| p.into_inner()) = outcome;
        exited.cancel();
    });
    let (outbox_tx, outbox_rx) = mpsc::channel(OUTBOX);
    let peer = Arc::new(Peer::new(outbox_tx));
    let closing = CancellationToken::new();
    tokio::spawn(write_lines(outbox_rx, stdin, closing.clone()));
    tokio::spawn(log_stderr(stderr, plugin.id.clone()));
    let (fault_tx, mut fault_rx) = mpsc::channel::<String>(1);
    tokio::spawn(read_frames(
        stdout,
        peer.clone(),
        plugins.clone(),
        plugin.clone(),
        fault_tx,
    ));
    plugin.set_pid(Some(pid));
    let exit = serve(
        plugin,
        stop,
        &manifest,
        &peer,
        &child,
        &mut fault_rx,
        dev_mode,
    )
    .await;
    plugin.set_peer(None);
    plugin.stop_jobs();
    if exit != Exit::Reload && exit != Exit::Stopped {
        child.kill();
    } else {
        // Asked to stop: a last word, its input closed, a grace period, then the kill.
        if manifest.implements("OnDeactivate") {
            let _ = peer
                .call("OnDeactivate", serde_json::json!({}), DEACTIVATE_DEADLINE)
                .await;
        }
        closing.cancel();
        if tokio::time::timeout(EXIT_GRACE, child.wait())
            .await
            .is_err()
        {
            tracing::warn!(plugin = %plugin.id, "plugin did not exit in its grace period: killed");
        }
        child.kill();
    }
    child.wait().await;
    peer.fail_all();
    plugin.set_pid(None);
    exit
}

async fn serve(
    plugin: &Arc<Plugin>,
    stop: &CancellationToken,
    manifest: &Manifest,
    peer: &Arc<Peer>,
    child: &Child,
    faults: &mut mpsc::Receiver<String>,
    dev_mode: bool,
) -> Exit {
    let limit = manifest.memory_limit_mb << 20;
    let over_memory = || {
        resident_bytes(child.pid).filter(|r| *r > limit).map(|r| {
            format!(
                "used {} MB, over its limit of {} MB",
                r >> 20,
                manifest.memory_limit_mb
            )
        })
    };
    // The handshake, raced against the process's end.
    let hello = serde_json::json!({
        "protocol": super::PROTOCOL_VERSION,
        "pluginId": plugin.id,
        "serverVersion": env!("CARGO_PKG_VERSION"),
        "botUserId": plugin.bot_id(),
        "config": plugin.config(),
        "devMode": dev_mode,
    });
    let handshake = async {
        peer.call("Hello", hello, HANDSHAKE)
            .await
            .map_err(|e| format!("no handshake: {e}"))?;
        if manifest.implements("OnActivate") {
            peer.call("OnActivate", serde_json::json!({}), HANDSHAKE)
                .await
                .map_err(|e| format!("OnActivate failed: {e}"))?;
        }
        Ok::<(), String>(())
    };
    tokio::select! {
        outcome = handshake => if let Err(reason) = outcome { return Exit::Crashed(reason) },
        _ = child.exited.cancelled() => {
            return Exit::Crashed(format!("exited before its handshake: {}", child.status()));
        }
        fault = faults.recv() => return Exit::Crashed(fault.unwrap_or_else(|| "its output ended".into())),
        _ = stop.cancelled() => return Exit::Stopped,
    }
    plugin.set_peer(Some(peer.clone()));
    plugin.set_state(State::Running, None);
    tracing::info!(plugin = %plugin.id, pid = child.pid, "plugin running");
    let mut health =
        tokio::time::interval_at(tokio::time::Instant::now() + HEALTH_EVERY, HEALTH_EVERY);
    let mut memory = tokio::time::interval(MEMORY_EVERY);
    let mut dev_poll = tokio::time::interval(DEV_POLL);
    let seen = fingerprint(&plugin.dir);
    let mut misses = 0;
    loop {
        tokio::select! {
            _ = child.exited.cancelled() => {
                return Exit::Crashed(format!("exited: {}", child.status()));
            }
            fault = faults.recv() => {
                return Exit::Crashed(fault.unwrap_or_else(|| "its output ended".into()));
            }
            _ = stop.cancelled() => return Exit::Stopped,
            _ = memory.tick() => {
                if let Some(reason) = over_memory() {
                    return Exit::Crashed(reason);
                }
            }
            _ = health.tick() => {
                match peer.call("HealthCheck", serde_json::json!({}), HEALTH_DEADLINE).await {
                    Ok(_) => misses = 0,
                    Err(err) if dev_mode => {
                        tracing::info!(plugin = %plugin.id, cause = %err, "health check missed (development mode: left running)");
                    }
                    Err(err) => {
                        misses += 1;
                        tracing::warn!(plugin = %plugin.id, cause = %err, misses, "health check missed");
                        if misses >= HEALTH_MISSES {
                            return Exit::Crashed(format!("missed {misses} health checks"));
                        }
                    }
                }
            }
            _ = dev_poll.tick(), if dev_mode => {
                if fingerprint(&plugin.dir) != seen {
                    return Exit::Reload;
                }
            }
        }
    }
}

/// Copies lines to the child's stdin until the outbox closes or the run stops.
async fn write_lines(
    mut outbox: mpsc::Receiver<String>,
    mut stdin: tokio::process::ChildStdin,
    closing: CancellationToken,
) {
    loop {
        let line = tokio::select! {
            line = outbox.recv() => line,
            _ = closing.cancelled() => None,
        };
        let Some(mut line) = line else { break };
        line.push('\n');
        if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
            break;
        }
    }
}

/// The child's stderr, line by line, into comet's log under the plugin's id.
async fn log_stderr(stderr: tokio::process::ChildStderr, plugin: String) {
    let mut lines = BufReader::new(stderr);
    let mut line = Vec::new();
    let mut window = Instant::now();
    let mut logged = 0u32;
    let mut skipped = 0u64;
    loop {
        line.clear();
        match tokio::io::AsyncReadExt::take(&mut lines, LOG_LINE as u64 * 4)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if window.elapsed() >= Duration::from_secs(1) {
            if skipped > 0 {
                tracing::warn!(plugin = %plugin, skipped, "plugin log lines dropped (over {LOG_LINES_PER_SECOND} a second)");
            }
            window = Instant::now();
            logged = 0;
            skipped = 0;
        }
        logged += 1;
        if logged > LOG_LINES_PER_SECOND {
            skipped += 1;
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text: String = text.trim_end().chars().take(LOG_LINE).collect();
        tracing::info!(plugin = %plugin, "{text}");
    }
}

/// Reads the child's stdout: answers go to their calls, calls to the API, and the first
/// line that is not JSON-RPC is reported as the run's fault.
async fn read_frames(
    stdout: tokio::process::ChildStdout,
    peer: Arc<Peer>,
    plugins: Arc<Plugins>,
    plugin: Arc<Plugin>,
    faults: mpsc::Sender<String>,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut line = Vec::with_capacity(1024);
    let in_flight = Arc::new(Semaphore::new(API_IN_FLIGHT));
    let fault = loop {
        match wire::read_line(&mut reader, &mut line).await {
            Ok(false) => break "its output ended".to_owned(),
            Err(err) => break format!("wrote {err}"),
            Ok(true) => {}
        }
        match wire::parse(&line) {
            Ok(None) => {}
            Ok(Some(Frame::Response { id, outcome })) => {
                if let Err(err) = peer.complete(id, outcome) {
                    break format!("wrote {err}");
                }
            }
            Ok(Some(Frame::Request { id, method, params })) => {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break "stopped".to_owned();
                };
                let (peer, plugins, plugin) = (peer.clone(), plugins.clone(), plugin.clone());
                tokio::spawn(async move {
                    let outcome = super::api::handle(&plugins, &plugin, &method, params).await;
                    peer.answer(id, outcome);
                    drop(permit);
                });
            }
            Ok(Some(Frame::Notification { method, params })) => {
                if method == "log" {
                    super::api::log(&plugin, &params);
                } else {
                    tracing::debug!(plugin = %plugin.id, %method, "unknown notification ignored");
                }
            }
            Err(err) => break format!("wrote {err}"),
        }
    };
    let _ = faults.send(fault).await;
}
