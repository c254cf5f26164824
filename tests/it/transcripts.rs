//! Replays every `fixtures/ddp/*.jsonl` conversation against the real server on port 0.
//!
//! Line forms: `{"config":{...}}` (first line: settings, as the flags' names),
//! `{"c2s":{...}}`, `{"c2s_raw":"text"}`, `{"c2s_binary":"<base64>"}`, `{"s2c":{...}}`, `{"s2c_any_order":[...]}`,
//! `{"silence_ms":n}`, `{"closed":true}`, `{"reconnect":true}`, `{"comment":"..."}`.
//! Expected strings may be placeholders: `"$ANY"`, `"$ID17"` (a Meteor random id),
//! `"$CAPTURE:name"` (remember the value), `"$SAME:name"`, `"$DIFFERENT:name"` (must differ from it).
//! Server pings are skipped unless a ping is expected.

#![allow(clippy::unwrap_used, clippy::type_complexity)] // test code: a failed unwrap is a failed test

use crate::common;

use common::{DdpClient, Received};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::time::Duration;

fn matches(expected: &Json, actual: &Json, captures: &mut HashMap<String, Json>) -> bool {
    match (expected, actual) {
        (Json::String(p), _) if p == "$ANY" => true,
        (Json::String(p), Json::String(a)) if p == "$ID17" => {
            a.len() == 17
                && a.bytes()
                    .all(|b| comet::model::random::UNMISTAKABLE_CHARS.contains(&b))
        }
        (Json::String(p), _) if p.starts_with("$CAPTURE:") => {
            captures.insert(p["$CAPTURE:".len()..].to_owned(), actual.clone());
            true
        }
        (Json::String(p), _) if p.starts_with("$SAME:") => {
            captures.get(&p["$SAME:".len()..]) == Some(actual)
        }
        (Json::String(p), _) if p.starts_with("$DIFFERENT:") => {
            captures.get(&p["$DIFFERENT:".len()..]) != Some(actual)
        }
        (Json::Object(e), Json::Object(a)) => {
            e.len() == a.len()
                && e.iter()
                    .all(|(k, v)| a.get(k).is_some_and(|av| matches(v, av, captures)))
        }
        (Json::Array(e), Json::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(x, y)| matches(x, y, captures))
        }
        (Json::Number(e), Json::Number(a)) => e.as_f64() == a.as_f64(),
        _ => expected == actual,
    }
}

async fn next_message(client: &mut DdpClient, want_ping: bool, line: usize) -> Json {
    loop {
        match client.next(Duration::from_secs(40)).await {
            Received::Message(m) if m["msg"] == "ping" && !want_ping => continue,
            Received::Message(m) => return m,
            other => panic!("line {line}: expected a message, got {other:?}"),
        }
    }
}

async fn replay(name: &str) {
    let path = format!("{}/fixtures/ddp/{name}.jsonl", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let steps: Vec<(usize, Json)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            (
                i + 1,
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}:{}: {e}", i + 1)),
            )
        })
        .collect();
    let config = steps.first().and_then(|(_, s)| s.get("config")).cloned();
    let settings = common::test_settings(|cli| {
        if let Some(cfg) = &config {
            let ms = |k: &str| cfg.get(k).and_then(Json::as_u64);
            cli.heartbeat_interval_ms = ms("heartbeat_interval_ms");
            cli.heartbeat_timeout_ms = ms("heartbeat_timeout_ms");
            cli.max_subscriptions = ms("max_subscriptions").map(|v| v as usize);
            cli.max_queued_methods = ms("max_queued_methods").map(|v| v as usize);
        }
    });
    let server = common::spawn_server(settings).await;
    let mut client = DdpClient::open(&server.ws_url()).await;
    let mut captures = HashMap::new();
    for (line, step) in &steps {
        let line = *line;
        if let Some(msg) = step.get("c2s") {
            client.send(msg.clone()).await;
        } else if let Some(raw) = step.get("c2s_raw").and_then(Json::as_str) {
            client.send_raw(raw).await;
        } else if let Some(b64) = step.get("c2s_binary").and_then(Json::as_str) {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            client
                .send_message(tokio_tungstenite::tungstenite::Message::binary(bytes))
                .await;
        } else if let Some(expected) = step.get("s2c") {
            let want_ping = expected["msg"] == "ping";
            let actual = next_message(&mut client, want_ping, line).await;
            assert!(
                matches(expected, &actual, &mut captures),
                "{name}:{line}: expected {expected}, got {actual}"
            );
        } else if let Some(Json::Array(expected)) = step.get("s2c_any_order") {
            let mut pending: Vec<Json> = expected.clone();
            for _ in 0..expected.len() {
                let actual = next_message(&mut client, false, line).await;
                let pos = pending
                    .iter()
                    .position(|e| matches(e, &actual, &mut captures))
                    .unwrap_or_else(|| {
                        panic!("{name}:{line}: unexpected {actual}, still waiting for {pending:?}")
                    });
                pending.remove(pos);
            }
        } else if let Some(ms) = step.get("silence_ms").and_then(Json::as_u64) {
            match client.next(Duration::from_millis(ms)).await {
                Received::Timeout => {}
                other => panic!("{name}:{line}: expected silence, got {other:?}"),
            }
        } else if step.get("closed").is_some() {
            loop {
                match client.next(Duration::from_secs(40)).await {
                    Received::Closed(_) => break,
                    Received::Message(m) if m["msg"] == "ping" => continue,
                    other => panic!("{name}:{line}: expected the socket to close, got {other:?}"),
                }
            }
        } else if step.get("reconnect").is_some() {
            client = DdpClient::open(&server.ws_url()).await;
        } else if step.get("comment").is_none() && step.get("config").is_none() {
            panic!("{name}:{line}: unknown step {step}");
        }
    }
    server.shutdown().await;
}

macro_rules! transcripts {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                replay(stringify!($name)).await;
            }
        )*

        #[test]
        fn every_fixture_is_replayed() {
            let listed = [$(stringify!($name)),*];
            let dir = format!("{}/fixtures/ddp", env!("CARGO_MANIFEST_DIR"));
            for entry in std::fs::read_dir(dir).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                if let Some(stem) = name.strip_suffix(".jsonl") {
                    assert!(listed.contains(&stem), "fixture {name} is not replayed");
                }
            }
        }
    };
}

transcripts!(
    c01_connect,
    c02_connect_unsupported_version_fails,
    c03_version_not_in_support_fails,
    c04_connect_without_support_fails,
    c05_connect_future_version_fails,
    c06_pre1_has_no_ping,
    c07_must_connect_first,
    c08_already_connected,
    c09_invalid_json,
    c10_json_not_object,
    c11_object_without_msg,
    c12_unknown_msg,
    c13_unknown_ejson_type,
    c14_connect_extra_fields,
    c15_ping,
    c16_ping_during_long_method,
    c17_pong_needs_no_answer,
    c18_server_heartbeat_closes_silent_client,
    c19_active_client_never_pinged,
    c20_unknown_publication,
    c21_malformed_sub_id,
    c22_malformed_sub_params,
    c23_sub_ready_after_docs,
    c24_duplicate_sub_ignored,
    c25_unsub_removes_docs,
    c26_unsub_unknown,
    c27_overlapping_fields,
    c28_first_publisher_wins,
    c29_cleared_on_unsub,
    c30_publication_throws,
    c31_publication_error,
    c32_publication_stop,
    c33_added_without_fields,
    c34_changed_cleared_only,
    c35_wire_ids,
    c36_resubscribe_overlap,
    c37_unknown_method,
    c38_malformed_random_seed,
    c39_malformed_params,
    c40_method_results,
    c41_method_returns_date,
    c42_method_internal_error,
    c43_method_meteor_error,
    c44_method_panic_is_internal,
    c45_match_failed,
    c46_echo_ejson,
    c47_methods_in_order_and_unblock,
    c60_disconnect_then_new_session,
    x01_binary_frame,
    x02_subscription_cap,
    x03_method_queue_cap,
    x04_wrong_field_types,
    x05_deep_nesting,
    x06_random_seed_ids,
    x07_ping_non_string_id,
    x08_ejson_values_clients_cannot_hold,
);
