//! Every integration test in one binary: one link of the crate and its helpers instead of one
//! per file, which keeps `./scripts/test.sh` well inside its time. Each module is the former
//! `tests/<name>.rs`; `cargo test --release --test it <module>::` runs one of them.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

mod accounts;
mod bad_input;
mod change_events;
mod declarative_security;
mod durability;
mod file_storage;
mod hooks;
mod initial_data;
mod instances;
mod layering;
mod limits;
mod live_data;
mod message_order;
mod messages;
mod mobile_app;
mod observe_differential;
mod operator;
mod permissions;
mod plugins;
mod presence;
mod properties;
mod query_fixtures;
mod rest;
mod rooms;
mod secrets;
mod security;
mod session_user;
mod settings;
mod storage_contract;
mod store_indexes;
mod streams;
mod teams;
mod transcripts;
mod uploads;
