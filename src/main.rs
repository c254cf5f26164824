//! The `comet` binary: parse settings, set up logging, run until a signal.

use clap::Parser as _;
use comet::config::{Cli, Settings};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let disable_sockjs = std::env::var_os("DISABLE_SOCKJS").is_some_and(|v| !v.is_empty());
    let settings = match Settings::resolve(cli, disable_sockjs) {
        Ok(mut s) => {
            s.setting_overrides = comet::config::setting_overrides(std::env::vars());
            s
        }
        Err(err) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("comet: {err}");
            }
            return ExitCode::from(2);
        }
    };
    init_tracing(settings.log_json);
    // One worker means one thread: the current-thread scheduler does the same work without
    // the cross-thread wake-ups of the multi-thread one.
    let mut builder = match settings.worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all();
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(err) => {
            tracing::error!(cause = %err, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(comet::app::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(cause = %err, "comet cannot start");
            #[allow(clippy::print_stderr)]
            {
                eprintln!("comet: {err}");
            }
            ExitCode::from(2)
        }
    }
}

fn init_tracing(json: bool) {
    use tracing_subscriber::filter::{FilterExt as _, LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let wanted = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Libraries that write whole frames or bodies at their most verbose levels (a login's
    // password digest, a token) stay at `debug` at most, whatever RUST_LOG asks for. A cap
    // beside RUST_LOG's filter, not a directive in it, so it never raises a level either.
    let cap = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets([
            ("tungstenite", LevelFilter::DEBUG),
            ("tokio_tungstenite", LevelFilter::DEBUG),
            ("hyper", LevelFilter::DEBUG),
            ("mongodb", LevelFilter::DEBUG),
        ]);
    let output = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let output = if json {
        output.json().boxed()
    } else {
        output.boxed()
    };
    tracing_subscriber::registry()
        .with(output.with_filter(wanted.and(cap)))
        .init();
}
