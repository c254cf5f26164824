//! Wiring: opens the store, starts live queries, builds the registry and the session hub
//! from settings, and runs the server until a shutdown signal.

use crate::config::Settings;
use crate::observe::ObserveHub;
use crate::server;
use crate::services::{builtin, declarative, Registry};
use crate::session::Hub;
use crate::storage::EmbeddedStore;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Why comet cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store in {dir}: {cause}")]
    Store {
        dir: String,
        cause: crate::storage::StoreError,
    },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The store, live queries, registry and session hub the settings describe.
pub fn build_hub(settings: &Settings) -> Result<Arc<Hub>, StartError> {
    let store = EmbeddedStore::open(&settings.data_dir).map_err(|cause| StartError::Store {
        dir: settings.data_dir.display().to_string(),
        cause,
    })?;
    let observe = ObserveHub::start(store.clone());
    let mut registry = Registry::new();
    builtin::register_meteor_defaults(&mut registry);
    if settings.test_handlers {
        builtin::register_test_handlers(&mut registry);
    }
    declarative::register(
        &mut registry,
        &settings.publications,
        &settings.collections,
        store,
        observe.clone(),
    )
    .map_err(|err| {
        let place = settings.config_source.as_ref().map(|(path, text)| {
            match crate::config::line_of_name(text, &err.name) {
                Some(line) => format!("configuration file {}, line {line}: ", path.display()),
                None => format!("configuration file {}: ", path.display()),
            }
        });
        StartError::Config(format!("{}{err}", place.unwrap_or_default()))
    })?;
    Ok(Hub::with_observe(
        registry,
        settings.session.clone(),
        observe,
    ))
}

/// Binds, serves, and returns after a graceful shutdown (SIGINT or SIGTERM).
pub async fn run(settings: Settings) -> Result<(), StartError> {
    let hub = build_hub(&settings)?;
    let listener = TcpListener::bind((settings.bind_ip, settings.port)).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, sockjs = settings.server.sockjs_enabled, test_handlers = settings.test_handlers, data_dir = %settings.data_dir.display(), "comet listening");
    if settings.mongo_url.is_some() {
        tracing::warn!("MONGO_URL is set, but this build serves from the embedded store only");
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
