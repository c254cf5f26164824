//! Durability: a child process inserting in a loop is killed with SIGKILL; after reopening,
//! every write it acknowledged is there, and a reader resuming from a token in the middle gets
//! every later change exactly once, in order.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code

use comet::model::{Document, Value};
use comet::storage::EmbeddedStore;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const CHILD_ENV: &str = "COMET_DURABILITY_CHILD_DIR";

/// In the child: insert forever, printing `seq id` after each acknowledged write.
#[tokio::test]
async fn durability_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only meaningful when started by the test below
    };
    let store = EmbeddedStore::open(std::path::Path::new(&dir)).unwrap();
    for i in 0u64.. {
        let mut doc = Document::default();
        doc.insert("_id".into(), Value::String(format!("w{i}")));
        doc.insert("n".into(), Value::Number(i as f64));
        let ack = store.insert("writes", doc).await.unwrap();
        println!("{} w{i}", ack.seq);
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill_and_resume_is_exact() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = std::env::temp_dir().join(format!(
        "comet-durability-{}",
        comet::model::random::random_id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "durability::durability_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acked: Vec<(u64, String)> = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        let mut parts = line.split_whitespace();
        if let (Some(seq), Some(id)) = (parts.next().and_then(|s| s.parse().ok()), parts.next()) {
            acked.push((seq, id.to_owned()));
        }
        if acked.len() >= 400 {
            break;
        }
    }
    // SIGKILL mid-loop: no chance to flush or close anything.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(acked.len(), 400);

    let store = EmbeddedStore::open(&dir).unwrap();
    let present = store.find("writes", Default::default()).await.unwrap();
    let ids: std::collections::HashSet<String> = present
        .iter()
        .map(|d| d.get("_id").and_then(Value::as_str).unwrap().to_owned())
        .collect();
    for (_, id) in &acked {
        assert!(ids.contains(id), "acknowledged write {id} lost");
    }
    // Resume from the middle: every later change once, in order, with nothing skipped.
    let token = acked[199].0;
    let replay = store.changes_since(token).await.unwrap();
    let seqs: Vec<u64> = replay.iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gap or duplicate in {seqs:?}"
    );
    assert_eq!(seqs.first(), Some(&(token + 1)));
    assert!(
        seqs.len() >= 200,
        "at least the acknowledged changes after the token"
    );
    for (seq, id) in &acked[200..] {
        let e = replay.iter().find(|e| e.seq == *seq).unwrap();
        assert_eq!(e.id, Some(Value::String(id.clone())));
    }
    // New writes continue the sequence after a restart.
    let mut doc = Document::default();
    doc.insert("_id".into(), Value::from("after"));
    let ack = store.insert("writes", doc).await.unwrap();
    assert_eq!(ack.seq, *seqs.last().unwrap() + 1);
}

/// Two stores on one file (as two processes would open it): each one's feed carries the
/// other's changes too, every change once, in the file's order, numbered without a clash.
#[tokio::test]
async fn two_writers_on_one_file_hear_each_other_in_order() {
    use comet::storage::Store;
    let dir = tempfile_dir("two-writers");
    let a = EmbeddedStore::open(&dir).unwrap();
    let b = EmbeddedStore::open(&dir).unwrap();
    let mut feed_a = Store::subscribe(&*a);
    let mut feed_b = Store::subscribe(&*b);
    let mut acked = Vec::new();
    for i in 0..20u64 {
        let writer = if i % 3 == 0 { &b } else { &a };
        let mut doc = Document::default();
        doc.insert("_id".into(), Value::String(format!("d{i}")));
        acked.push(Store::insert(&**writer, "shared", doc).await.unwrap().seq);
    }
    let mut sorted = acked.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, acked, "numbers rise and never clash: {acked:?}");
    for feed in [&mut feed_a, &mut feed_b] {
        let mut seen = Vec::new();
        while seen.len() < 20 {
            let event = tokio::time::timeout(std::time::Duration::from_secs(3), feed.recv())
                .await
                .expect("every change arrives")
                .unwrap();
            seen.push((event.seq, event.id.clone()));
        }
        let ids: Vec<Value> = (0..20).map(|i| Value::String(format!("d{i}"))).collect();
        assert_eq!(
            seen.iter()
                .map(|s| s.1.clone().unwrap())
                .collect::<Vec<_>>(),
            ids
        );
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), acked);
    }
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("comet-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
