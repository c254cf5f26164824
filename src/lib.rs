//! comet: a realtime backend that speaks Meteor's DDP protocol.
//!
//! # Layout
//!
//! | Layer | Owns | Uses |
//! | --- | --- | --- |
//! | `model` | EJSON values, ids, random ids, client-safe errors, secrets as values | nothing else |
//! | `protocol` | wire messages: decoding client frames, encoding server frames | model |
//! | `storage` | persistence and the change feed | model |
//! | `observe` | live queries | model, storage |
//! | `services` | methods and publications (the registry), the limits every call passes | model, storage, observe |
//! | `session` | DDP state machine, mergebox, outbound queue, heartbeat | protocol, model, services |
//! | `rest` | Rocket.Chat's `/api` routes: envelopes, statuses, limits per route, CORS decisions, thin adapters | model, services |
//! | `server` | HTTP, WebSocket, SockJS, caps per address, `/metrics` access, shutdown; hands `/api` to `rest` | session, rest |
//!
//! `config` and `app` wire the layers together; `main.rs` runs them.

pub mod app;
pub mod config;
pub mod model;
pub mod observe;
pub mod protocol;
pub mod rest;
pub mod server;
pub mod services;
pub mod session;
pub mod storage;
