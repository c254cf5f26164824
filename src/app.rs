//! Wiring: opens the store, starts live queries, builds the registry and the session hub
//! from settings, and runs the server until a shutdown signal.

use crate::chat::accounts::{self, Accounts};
use crate::chat::hooks::Hooks;
use crate::chat::posting::Posting;
use crate::chat::{permissions, settings};
use crate::config::Settings;
use crate::engine::feed::Follower;
use crate::engine::{builtin, declarative, testing, Registry};
use crate::observe::ObserveHub;
use crate::rest::Rest;
use crate::server;
use crate::session::Hub;
use crate::storage::{EmbeddedStore, MongoOptions, MongoStore, Store};
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
    #[error("cannot use MongoDB: {0}")]
    Mongo(crate::storage::StoreError),
    #[error("cannot create index {keys} on {collection}: {cause}")]
    Index {
        collection: String,
        keys: String,
        cause: crate::storage::StoreError,
    },
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        addr: std::net::SocketAddr,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The store the settings name: MongoDB when `MONGO_URL` is set, else the embedded store.
pub async fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, StartError> {
    match &settings.mongo_url {
        Some(url) => {
            let store = MongoStore::connect(MongoOptions {
                url: url.clone(),
                oplog_url: settings.mongo_oplog_url.clone(),
                state_dir: settings.data_dir.clone(),
                post_images: settings.mongo_post_images,
            })
            .await
            .map_err(StartError::Mongo)?;
            Ok(store)
        }
        None => {
            let store =
                EmbeddedStore::open(&settings.data_dir).map_err(|cause| StartError::Store {
                    dir: settings.data_dir.display().to_string(),
                    cause,
                })?;
            Ok(store)
        }
    }
}

/// What serving needs: the session hub (DDP) and the REST routes, over one set of services,
/// and the hook points those services run (where in-process hooks and plugins are added).
pub struct Built {
    pub hub: Arc<Hub>,
    pub rest: Arc<Rest>,
    pub hooks: Arc<Hooks>,
    /// The Upload service (its upkeep is reachable from here).
    pub uploads: Arc<crate::chat::uploads::Uploads>,
    /// The plugins, which are stopped (`OnDeactivate`, then their processes end) when
    /// serving ends.
    pub plugins: Arc<crate::chat::plugins::Plugins>,
    /// Presence, which announces this instance in `instances`.
    pub presence: Arc<crate::chat::presence::Presence>,
    /// The deployment-wide jobs' leases, given up when serving ends.
    pub leases: Arc<crate::chat::leases::Leases>,
}

/// The store, live queries, services, session hub and REST routes the settings describe.
pub async fn build(settings: &Settings) -> Result<Built, StartError> {
    let store = open_store(settings).await?;
    let observe = ObserveHub::start(store.clone());
    let mut registry = Registry::new();
    if let Some(url) = &settings.transporter {
        let bus = crate::engine::nats::NatsBus::connect(
            url,
            registry.instance_id().clone(),
            registry.local_streams().clone(),
        )
        .await
        .map_err(|err| StartError::Config(err.to_string()))?;
        tracing::info!(instance = %registry.instance_id(), "sharing events with other instances over NATS");
        registry.use_bus(bus);
    }
    // One follower of the store's changes for every service, subscribed before any reads.
    let follower = Follower::new(&*store);
    builtin::register_meteor_defaults(&mut registry);
    // The chat services, each started after those it uses.
    let settings_service =
        settings::Settings::start(store.clone(), &settings.setting_overrides, &follower)
            .await
            .map_err(|err| StartError::Config(format!("cannot read the settings: {err}")))?;
    let rules_from = settings_service.clone();
    registry
        .call_limits()
        .use_source(move || rules_from.call_rules());
    let permissions_service = permissions::Permissions::start(store.clone(), &follower)
        .await
        .map_err(|err| StartError::Config(format!("cannot read the permissions: {err}")))?;
    let hooks = Hooks::new();
    let accounts = Accounts::start(
        store.clone(),
        registry.connections().clone(),
        settings.accounts.clone(),
        settings_service.clone(),
        permissions_service.user_roles().clone(),
        hooks.clone(),
        &follower,
    )
    .await
    .map_err(|err| StartError::Config(format!("cannot read the users: {err}")))?;
    accounts::methods::register(&mut registry, accounts.clone(), observe.clone());
    settings::methods::register(
        &mut registry,
        settings_service.clone(),
        permissions_service.clone(),
    );
    permissions::methods::register(&mut registry, permissions_service.clone());
    let notify = crate::chat::notify::Notify::start(
        &mut registry,
        &store,
        permissions_service.clone(),
        &follower,
    );
    let presence = crate::chat::presence::Presence::start(
        store.clone(),
        permissions_service.clone(),
        &mut registry,
        settings.presence.clone(),
        notify.logged.clone(),
        &follower,
    )
    .await
    .map_err(|err| StartError::Config(format!("cannot prepare presence: {err}")))?;
    let leases = crate::chat::leases::Leases::start(
        store.clone(),
        registry.instance_id().clone(),
        settings.lease,
    );
    let posting = Posting::new(
        store.clone(),
        permissions_service.clone(),
        settings_service.clone(),
        hooks.clone(),
    );
    if settings.transporter.is_some() {
        posting.share_clocks();
    }
    let rooms_service =
        crate::chat::rooms::Rooms::start(store.clone(), permissions_service.clone(), posting)
            .await
            .map_err(|err| StartError::Config(format!("cannot prepare the rooms: {err}")))?;
    let rooms = rooms_service.clone();
    hooks.add(crate::chat::rooms::members::DefaultChannels::new(&rooms));
    crate::chat::rooms::methods::register(&mut registry, rooms.clone());
    crate::chat::rooms::live::RoomStreams::start(
        &mut registry,
        store.clone(),
        rooms.clone(),
        permissions_service.clone(),
        settings_service.clone(),
        &follower,
    )
    .await
    .map_err(|err| StartError::Config(format!("cannot read the rooms' members: {err}")))?;
    let teams = crate::chat::teams::Teams::start(
        store.clone(),
        rooms_service.clone(),
        permissions_service.clone(),
    )
    .await
    .map_err(|err| StartError::Config(format!("cannot prepare the teams: {err}")))?;
    let messages = crate::chat::messages::Messages::start(
        store.clone(),
        rooms,
        permissions_service.clone(),
        settings_service.clone(),
    )
    .await
    .map_err(|err| StartError::Config(format!("cannot prepare the messages: {err}")))?;
    crate::chat::messages::methods::register(&mut registry, messages.clone());
    if settings.transporter.is_some() {
        // Alone, there is nobody to tell: no event a message.
        messages.share_limits(&registry);
    }
    let uploads = crate::chat::uploads::Uploads::start(
        store.clone(),
        rooms_service.clone(),
        messages.clone(),
        settings_service.clone(),
        hooks.clone(),
        settings.data_dir.clone(),
        store.mongo_database(),
    )
    .await
    .map_err(|err| StartError::Config(format!("cannot prepare the uploads: {err}")))?;
    crate::chat::uploads::methods::register(&mut registry, &uploads);
    crate::chat::upkeep::Upkeep {
        store: store.clone(),
        accounts: accounts.clone(),
        uploads: uploads.clone(),
    }
    .start(&leases, settings.upkeep_every);
    let emoji = crate::chat::emoji::CustomEmoji::new(store.clone(), permissions_service.clone());
    let push = crate::chat::push::PushTokens::new(store.clone());
    let commands = crate::chat::commands::Commands::new(
        rooms_service.clone(),
        messages.clone(),
        presence.clone(),
    );
    crate::chat::workspace::register(&mut registry, &emoji, &commands, &permissions_service);
    let plugins = crate::chat::plugins::Plugins::new(
        settings.plugins.clone(),
        &settings.data_dir,
        crate::chat::plugins::Services {
            store: store.clone(),
            accounts: accounts.clone(),
            rooms: rooms_service.clone(),
            messages: messages.clone(),
            settings: settings_service.clone(),
            permissions: permissions_service.clone(),
            bus: registry.bus().clone(),
            leases: leases.clone(),
        },
        hooks.clone(),
        &mut registry,
        &commands,
    )
    .map_err(|err| StartError::Config(format!("cannot prepare the plugins: {err:?}")))?;
    let operator = crate::chat::operator::Operator::start(
        store.clone(),
        permissions_service.clone(),
        &mut registry,
    );
    if settings.test_handlers && settings.bench_passthrough_hook {
        hooks.add(Arc::new(crate::chat::hooks::PassThrough));
    }
    if settings.test_handlers {
        let before: std::collections::HashSet<String> = registry
            .method_names()
            .into_iter()
            .chain(registry.publication_names())
            .collect();
        testing::register(&mut registry, Some(observe.clone()));
        // The test handlers stand outside the rate limits (as Rocket.Chat's TEST_MODE
        // does), unless a benchmark asks to count them to measure the limiter.
        if !settings.rate_limit_test_handlers {
            for name in registry
                .method_names()
                .into_iter()
                .chain(registry.publication_names())
                .filter(|n| !before.contains(n))
            {
                registry.call_limits().exempt(&name);
            }
        }
    }
    let indexes = declarative::register(
        &mut registry,
        &settings.publications,
        &settings.collections,
        store.clone(),
        observe.clone(),
    )
    .map_err(|err| {
        let place = settings.config_source.as_ref().map(|(path, text)| {
            match crate::config::line_of_name(text, &err.name, err.occurrence) {
                Some(line) => format!("configuration file {}, line {line}: ", path.display()),
                None => format!("configuration file {}: ", path.display()),
            }
        });
        StartError::Config(format!("{}{err}", place.unwrap_or_default()))
    })?;
    for index in indexes {
        store
            .ensure_index(&index.collection, index.keys.clone())
            .await
            .map_err(|cause| StartError::Index {
                collection: index.collection.clone(),
                keys: crate::model::Value::Object(index.keys.to_document()).to_ejson_string(),
                cause,
            })?;
    }
    // Every service follows the store from here on, before anything more is written.
    follower.start();
    // Once every service follows the store and the default channels' reaction is in place:
    // the administrator joins `general` as any new user joins the default channels.
    if let Err(err) = accounts.bootstrap().await {
        return Err(StartError::Config(format!(
            "cannot set up the first administrator: {}",
            err.client_view().reason.unwrap_or_default()
        )));
    }
    // Plugins start once the store is followed and the first administrator exists (each
    // plugin's bot user is created like any user).
    plugins.start_all().await;
    let hub = Hub::with_observe(registry, settings.session.clone(), observe);
    let metrics = hub.metrics.clone();
    let figures = plugins.clone();
    hub.metrics
        .add_text(Box::new(move || figures.metrics_text()));
    let bus = hub.registry.bus().clone();
    hub.metrics.add_text(Box::new(move || bus.metrics_text()));
    let lease_figures = leases.clone();
    hub.metrics
        .add_text(Box::new(move || lease_figures.metrics_text()));
    // The operator's figures come from the server's metrics, which exist with the hub.
    operator.start_sampling(Box::new(move || metrics.render()));
    let rest = Arc::new(Rest::with_services(
        &settings.server.rocketchat_version,
        crate::rest::RestServices {
            accounts,
            registry: hub.registry.clone(),
            settings: settings_service,
            permissions: permissions_service,
            rooms: rooms_service,
            messages,
            presence: presence.clone(),
            teams,
            emoji,
            uploads: uploads.clone(),
            push,
            commands,
            plugins: plugins.clone(),
        },
    ));
    Ok(Built {
        hub,
        rest,
        hooks,
        uploads,
        plugins,
        presence,
        leases,
    })
}

/// Binds, serves, and returns after a graceful shutdown (SIGINT or SIGTERM).
pub async fn run(settings: Settings) -> Result<(), StartError> {
    let Built {
        hub,
        rest,
        plugins,
        presence,
        leases,
        ..
    } = build(&settings).await?;
    let listener = bind(&settings).await?;
    let addr = listener.local_addr()?;
    presence
        .set_address(
            settings
                .instance_address
                .clone()
                .unwrap_or_else(|| addr.to_string()),
        )
        .await;
    tracing::info!(%addr, sockjs = settings.server.sockjs_enabled, test_handlers = settings.test_handlers, data_dir = %settings.data_dir.display(), store = hub.observe.as_ref().map_or("none", |o| o.store().kind()), "comet listening");
    spawn_signal_handler(hub.clone());
    server::serve(listener, hub, rest, settings.server.clone()).await;
    // Another instance takes the deployment's jobs over at once, not when the leases run out.
    leases.release_all().await;
    plugins.stop_all().await;
    tracing::info!("comet stopped");
    Ok(())
}
/// The listening socket the settings name; the error says which address could not be used.
pub async fn bind(settings: &Settings) -> Result<TcpListener, StartError> {
    let addr = std::net::SocketAddr::new(settings.bind_ip, settings.port);
    TcpListener::bind(addr)
        .await
        .map_err(|cause| StartError::Bind { addr, cause })
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
