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
//! | `engine` | the DDP engine, no chat in it: methods and publications (the registry), `check()` patterns, declarative publications, the streams hub, connections, the write fence, the limits every call passes | model, storage, observe |
//! | `chat` | Rocket.Chat's services: accounts, settings, permissions, rooms, messages, teams, presence, notify streams, the operator's page; every collection's name; typed records; the call context; the one path of stored messages; the hook points on every kind of write | model, storage, observe, engine |
//! | `session` | DDP state machine, mergebox, outbound queue, heartbeat | protocol, model, engine |
//! | `rest` | Rocket.Chat's `/api` routes: envelopes, statuses, limits per route, CORS decisions, route tables of thin handlers over the typed API | model, engine, chat |
//! | `server` | HTTP, WebSocket, SockJS, caps per address, `/metrics` access, shutdown; hands `/api` to `rest` | session, rest |
//!
//! `config` and `app` wire the layers together; `main.rs` runs them.

pub mod app;
pub mod chat;
pub mod config;
pub mod engine;
pub mod model;
pub mod observe;
pub mod protocol;
pub mod rest;
pub mod server;
pub mod session;
pub mod storage;
