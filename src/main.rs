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
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Libraries that write whole frames or bodies at their most verbose levels (a login's
    // password digest, a token) stay at `debug` at most, whatever RUST_LOG asks for.
    for quiet in [
        "tungstenite=debug",
        "tokio_tungstenite=debug",
        "hyper=debug",
        "mongodb=debug",
    ] {
        if let Ok(directive) = quiet.parse() {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
