//! The operator's publication `comet.operator` and `comet.operator.closeConnection`: a
//! stranger and a plain user get nothing and close nothing; an administrator sees the figures,
//! the history and the live connections, and closes one.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::{DdpClient, Received};
use serde_json::json;
use std::time::Duration;

/// `client` is told no by the publication (and sent nothing) and by the close method.
async fn assert_refused(client: &mut DdpClient, someone: &str) {
    let frames = client.subscribe("s", "comet.operator", json!([])).await;
    assert_eq!(frames.len(), 1, "told no and sent nothing: {frames:?}");
    assert_eq!(frames[0]["msg"], "nosub");
    assert_eq!(frames[0]["error"]["error"], "error-not-allowed");
    let (r, _) = client
        .call("c", "comet.operator.closeConnection", json!([someone]))
        .await;
    assert_eq!(r["error"]["error"], "error-not-allowed", "{r}");
}

#[tokio::test]
async fn strangers_and_plain_users_get_no_figures_and_close_nothing() {
    let server = common::spawn_with_admin().await;
    let (mut stranger, stranger_session) = DdpClient::connect(&server).await;
    assert_refused(&mut stranger, &stranger_session).await;
    let (mut ann, _, _) = common::registered(&server, "ann").await;
    assert_refused(&mut ann, &stranger_session).await;

    // The stranger's connection is still open: nothing was closed on their say.
    let (r, _) = stranger.call("p", "echo", json!([1])).await;
    assert_eq!(r["result"], 1, "{r}");
}

#[tokio::test]
async fn an_administrator_sees_the_figures_and_the_connections_and_closes_one() {
    let server = common::spawn_with_admin().await;
    let (mut ann, ann_id, _) = common::registered(&server, "ann").await;
    let mut boss = common::logged_in(&server, common::ADMIN.0, common::ADMIN.1).await;
    let frames = boss.subscribe("s", "comet.operator", json!([])).await;
    assert_eq!(frames.last().unwrap()["msg"], "ready", "{frames:?}");
    let added = |collection: &str, id: &str| {
        frames
            .iter()
            .find(|f| f["msg"] == "added" && f["collection"] == collection && f["id"] == id)
            .cloned()
    };
    let figures = added("comet_operator", "figures").expect("figures");
    assert_eq!(figures["fields"]["store"], "embedded", "{figures}");
    assert!(added("comet_operator", "history").is_some());
    // The figures are sampled once a second: the next sample counts both sessions.
    let mut sessions = figures["fields"]["sessions"].as_f64().unwrap();
    while sessions < 2.0 {
        let m = boss
            .next_on("comet_operator", Duration::from_secs(3))
            .await
            .expect("the figures change within a few seconds");
        if m["id"] == "figures" {
            if let Some(n) = m["fields"]["sessions"].as_f64() {
                sessions = n;
            }
        }
    }

    // Ann's connection is listed under her name; closing it ends her socket.
    let listed: Vec<_> = frames
        .iter()
        .filter(|f| f["msg"] == "added" && f["collection"] == "comet_operator_connections")
        .collect();
    let row = listed
        .iter()
        .find(|f| f["fields"]["userId"] == ann_id.as_str())
        .unwrap_or_else(|| panic!("ann listed: {listed:?}"));
    assert_eq!(row["fields"]["username"], "ann");
    assert_eq!(row["fields"]["transport"], "websocket");
    let connection = row["id"].as_str().unwrap().to_owned();
    let (r, _) = boss
        .call("c", "comet.operator.closeConnection", json!([connection]))
        .await;
    assert_eq!(r["result"], true, "{r}");
    let mut closed = false;
    for _ in 0..50 {
        match ann.next(Duration::from_millis(100)).await {
            Received::Closed(_) => {
                closed = true;
                break;
            }
            Received::Message(_) | Received::Timeout => continue,
        }
    }
    assert!(closed, "ann's socket closes");
    let (r, _) = boss
        .call("c2", "comet.operator.closeConnection", json!([connection]))
        .await;
    assert_eq!(r["result"], false, "no such connection any more: {r}");
    let (r, _) = boss
        .call("c3", "comet.operator.closeConnection", json!([{"$ne": ""}]))
        .await;
    assert_eq!(
        r["error"]["error"], 400,
        "an id is a string, never a query: {r}"
    );
}
