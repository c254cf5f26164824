//! A publication whose initial documents are far more than a connection's outbound limit:
//! a client that reads gets every document and `ready`; a client that stops reading is
//! still cut as a slow consumer; changes made while the initial documents are on their way
//! are not lost.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use comet::model::{Document, Value};
use common::{DdpClient, Received};
use serde_json::json;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const CONFIG: &str = r#"
[[publications]]
name = "big.all"
collection = "big"

[[collections]]
name = "big"
update = {}
remove = {}
"#;

const DOC_BYTES: usize = 100 * 1024;

async fn server_with(docs: usize) -> common::TestServer {
    let path = common::config_file(CONFIG);
    let server = common::spawn_server(common::test_settings(|c| {
        c.config = Some(path);
        c.max_outbound_bytes = Some(1024 * 1024);
        c.max_drain_delay_ms = Some(1500);
        c.heartbeat_interval_ms = Some(300);
    }))
    .await;
    let store = server.hub.observe.as_ref().unwrap().store().clone();
    for i in 0..docs {
        let mut doc = Document::default();
        doc.insert("_id".into(), Value::String(format!("d{i:04}")));
        doc.insert("n".into(), Value::Number(i as f64));
        doc.insert("body".into(), Value::String("x".repeat(DOC_BYTES)));
        store.insert("big", doc).await.unwrap();
    }
    server
}

#[tokio::test]
async fn initial_documents_beyond_the_outbound_limit_reach_a_reading_client() {
    // 6 MB of initial documents against a 1 MiB outbound limit.
    let server = server_with(60).await;
    let (mut c, _) = DdpClient::connect(&server).await;
    c.send(json!({"msg":"sub","id":"s","name":"big.all","params":[]}))
        .await;
    let mut ids = Vec::new();
    loop {
        let m = c.recv_data().await;
        match m["msg"].as_str().unwrap() {
            "added" => ids.push(m["id"].as_str().unwrap().to_owned()),
            "ready" => break,
            other => panic!("unexpected {other}: {m}"),
        }
    }
    assert_eq!(ids.len(), 60);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 60, "each document once");
    assert_eq!(
        common::metric(&server, "comet_slow_consumers_closed_total").await,
        0.0
    );
    server.shutdown().await;
}

#[tokio::test]
async fn changes_during_the_initial_documents_are_not_lost() {
    let server = server_with(60).await;
    let (mut writer, _) = DdpClient::connect(&server).await;
    let (mut c, _) = DdpClient::connect(&server).await;
    c.send(json!({"msg":"sub","id":"s","name":"big.all","params":[]}))
        .await;
    // While the reader has read nothing yet: change the last document (not sent yet), remove
    // one, and change the first (already sent).
    let (r, _) = writer
        .call("1", "/big/update", json!(["d0059", {"$set": {"n": -1}}]))
        .await;
    assert_eq!(r["result"], 1);
    let (r, _) = writer.call("2", "/big/remove", json!(["d0058"])).await;
    assert_eq!(r["result"], 1);
    let (r, _) = writer
        .call("3", "/big/update", json!(["d0000", {"$set": {"n": -2}}]))
        .await;
    assert_eq!(r["result"], 1);
    let mut view = std::collections::HashMap::new();
    let mut ready = false;
    while !ready || view.len() != 59 || view.get("d0000") != Some(&json!(-2)) {
        let m = match c.next(Duration::from_secs(10)).await {
            Received::Message(m) => m,
            other => panic!("{other:?} with {} documents", view.len()),
        };
        let id = m["id"].as_str().unwrap_or_default().to_owned();
        match m["msg"].as_str().unwrap() {
            "added" => {
                assert!(view.insert(id, m["fields"]["n"].clone()).is_none());
            }
            "changed" => {
                view.insert(id, m["fields"]["n"].clone());
            }
            "removed" => {
                view.remove(&id);
            }
            "ready" => ready = true,
            _ => {}
        }
    }
    assert_eq!(view.get("d0059"), Some(&json!(-1)));
    assert!(!view.contains_key("d0058"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_initial_documents_is_still_cut() {
    // 20 MB: beyond what socket buffers absorb.
    let server = server_with(200).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let mut raw = common::raw_websocket_over(stream).await;
    for msg in [
        json!({"msg":"connect","version":"1","support":["1"]}),
        json!({"msg":"sub","id":"s","name":"big.all","params":[]}),
    ] {
        raw.write_all(&common::client_frame(0x1, msg.to_string().as_bytes()))
            .await
            .unwrap();
    }
    let closed = common::metric_reaches(
        &server,
        "comet_slow_consumers_closed_total",
        1.0,
        Duration::from_secs(10),
    )
    .await;
    assert!(closed, "the client that stopped reading was closed");
    // Others are still served.
    let (mut c, _) = DdpClient::connect(&server).await;
    let (r, _) = c.call("e", "echo", json!([1])).await;
    assert_eq!(r["result"], 1);
    drop(raw);
    server.shutdown().await;
}
