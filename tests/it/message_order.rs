//! Message times under load and across crashes: eight writers send into one room while the
//! server is killed with SIGKILL and restarted, three times. Every acknowledged message is
//! then read back through history paging, no two messages of the room share a `ts`, and no
//! `ts` runs ahead of the time the writer got its acknowledgement.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::{Binary, DdpClient, Received};
use serde_json::{json, Value as Json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WRITERS: usize = 8;
const ROUND: Duration = Duration::from_millis(1500);

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64
}

fn envs() -> Vec<(&'static str, &'static str)> {
    vec![
        ("ADMIN_USERNAME", common::ADMIN.0),
        ("ADMIN_PASS", common::ADMIN.1),
        ("ADMIN_EMAIL", common::ADMIN.2),
        ("COMET_BCRYPT_COST", "4"),
        // One user writes from eight connections, far past Rocket.Chat's 1,200 calls a
        // minute per user, and pages history back faster than 10 calls in 10 s: those
        // rules have their own tests (`security.rs`).
        ("OVERWRITE_SETTING_DDP_Rate_Limit_User_Enabled", "false"),
        (
            "OVERWRITE_SETTING_DDP_Rate_Limit_User_By_Method_Enabled",
            "false",
        ),
        (
            "OVERWRITE_SETTING_DDP_Rate_Limit_Connection_By_Method_Enabled",
            "false",
        ),
    ]
}

/// A connection logged in as the administrator (who may send many messages a second).
async fn admin(addr: std::net::SocketAddr) -> DdpClient {
    let mut c = DdpClient::open(&format!("ws://{addr}/websocket")).await;
    c.send(json!({"msg": "connect", "version": "1", "support": ["1"]}))
        .await;
    c.recv().await;
    let frames = c
        .call_seeing(
            "in",
            "login",
            json!([{"user": {"username": common::ADMIN.0}, "password": common::ADMIN.1}]),
        )
        .await;
    assert!(frames.last().unwrap().get("result").is_some(), "{frames:?}");
    c
}

/// Sends messages with ids of its own until the connection goes, recording each
/// acknowledged id with the time the acknowledgement arrived.
async fn write(
    mut c: DdpClient,
    prefix: String,
    acked: Arc<Mutex<Vec<(String, f64)>>>,
    stop: Arc<AtomicBool>,
) {
    for n in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let id = format!("{prefix}-{n}");
        let call = json!({"msg": "method", "id": "s", "method": "sendMessage",
            "params": [{"_id": id, "rid": "GENERAL", "msg": id}]});
        if !c.try_send(call).await {
            return;
        }
        loop {
            match c.next(Duration::from_secs(10)).await {
                Received::Message(m) if m["msg"] == "result" && m["id"] == "s" => {
                    assert!(m.get("error").is_none(), "{m}");
                    acked.lock().unwrap().push((id.clone(), now_ms()));
                    break;
                }
                Received::Message(_) => continue,
                Received::Closed(_) | Received::Timeout => return,
            }
        }
    }
}

/// Every message of `GENERAL`, paged back from the newest with `loadHistory`'s `end`.
async fn read_back(c: &mut DdpClient) -> Vec<Json> {
    let mut all = Vec::new();
    let mut end = Json::Null;
    loop {
        let (r, _) = c
            .call_keeping("h", "loadHistory", json!(["GENERAL", end, 500, null]))
            .await;
        let page = r["result"]["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("{r}"))
            .clone();
        let Some(oldest) = page.last() else {
            return all;
        };
        end = oldest["ts"].clone();
        all.extend(page);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_message_pages_back_with_a_unique_time_after_sigkills() {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut server = Binary::start("", &envs());
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let c = admin(server.addr).await;
            writers.push(tokio::spawn(write(
                c,
                format!("r{round}w{w}"),
                acked.clone(),
                stop.clone(),
            )));
        }
        tokio::time::sleep(ROUND).await;
        // No shutdown of any kind: writes in flight are cut where they are.
        let dir = server.kill();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
        server = Binary::start_in(dir, "", &envs());
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 300, "too few writes to tell: {}", acked.len());

    let mut reader = admin(server.addr).await;
    let stored = read_back(&mut reader).await;
    let by_id: HashMap<&str, &Json> = stored
        .iter()
        .map(|m| (m["_id"].as_str().unwrap(), m))
        .collect();
    assert_eq!(by_id.len(), stored.len(), "a message was paged twice");
    let mut missing = Vec::new();
    let mut ahead = Vec::new();
    for (id, acked_at) in &acked {
        match by_id.get(id.as_str()) {
            None => missing.push(id.clone()),
            Some(m) => {
                let ts = m["ts"]["$date"].as_f64().unwrap();
                // Never ahead of the clock by more than a few milliseconds.
                if ts > acked_at + 5.0 {
                    ahead.push((id.clone(), ts - acked_at));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged messages not paged back: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        ahead.is_empty(),
        "{} messages dated ahead of their acknowledgement: {:?}",
        ahead.len(),
        &ahead[..ahead.len().min(10)]
    );
    let mut times = HashSet::new();
    let shared: Vec<&Json> = stored
        .iter()
        .filter(|m| !times.insert(m["ts"]["$date"].as_f64().unwrap() as i64))
        .collect();
    assert!(
        shared.is_empty(),
        "{} messages share their ts with another",
        shared.len()
    );
    server.stop();
}
