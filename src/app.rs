//! Wiring: builds the registry and the session hub from settings and runs the server until
//! a shutdown signal.

use crate::config::Settings;
use crate::server;
use crate::services::{builtin, Registry};
use crate::session::Hub;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The registry of every service the settings enable.
pub fn build_registry(settings: &Settings) -> Registry {
    let mut registry = Registry::new();
    builtin::register_meteor_defaults(&mut registry);
    if settings.test_handlers {
        builtin::register_test_handlers(&mut registry);
    }
    registry
}

/// Binds, serves, and returns after a graceful shutdown (SIGINT or SIGTERM).
pub async fn run(settings: Settings) -> std::io::Result<()> {
    let registry = build_registry(&settings);
    let hub = Hub::new(registry, settings.session.clone());
    let listener = TcpListener::bind((settings.bind_ip, settings.port)).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, sockjs = settings.server.sockjs_enabled, test_handlers = settings.test_handlers, "comet listening");
    if settings.mongo_url.is_some() {
        tracing::warn!("MONGO_URL is set, but this build serves without a database backend yet");
    }
    spawn_signal_handler(hub.clone());
    server::serve(listener, hub, settings.server.clone()).await;
    tracing::info!("comet stopped");
    Ok(())
}

fn spawn_signal_handler(hub: Arc<Hub>) {
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(err) => {
                    tracing::warn!(cause = %err, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            _ = terminate => tracing::info!("SIGTERM received"),
        }
        hub.shutdown.cancel();
    });
}
