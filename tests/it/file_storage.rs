//! The file storage contract, run the same against each backend on real parts: the file
//! system on this machine's disk, an S3-compatible server (moto's, from PyPI, started
//! here from `tests/s3/.venv`, which `scripts/install-test-deps.sh` makes), and GridFS
//! through the MongoDB driver against the wire harness's scripted primary
//! (`tests/mongo_wire/gridfs_primary.py`, PyPI's mockupdb; the one double allowed).

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use comet::storage::files::{FileError, FileStore, S3Options};
use futures_util::StreamExt as _;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A server process stopped when the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

async fn read_all(store: &FileStore, key: &str, range: Option<std::ops::Range<u64>>) -> Vec<u8> {
    let mut stream = store.read(key, range).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

/// What every backend must do: a file written in parts reads back whole and in ranges,
/// has its size, goes when deleted (twice is fine), and an aborted writer leaves nothing.
async fn contract(store: &FileStore, prefix: &str) {
    let key = format!("{prefix}contract-1");
    let data = body(6 * 1024 * 1024 + 123);
    let mut writer = store.create(&key, "big.bin").await.unwrap();
    for part in data.chunks(700_000) {
        writer.write(part).await.unwrap();
    }
    assert_eq!(writer.finish().await.unwrap(), data.len() as u64);
    assert_eq!(store.size(&key).await.unwrap(), data.len() as u64);
    assert!(
        read_all(store, &key, None).await == data,
        "the whole file reads back"
    );
    let range = 5_000_000u64..5_300_001;
    assert_eq!(
        read_all(store, &key, Some(range.clone())).await,
        data[range.start as usize..range.end as usize].to_vec()
    );
    assert_eq!(read_all(store, &key, Some(0..1)).await, vec![data[0]]);
    store.delete(&key).await.unwrap();
    assert!(matches!(store.size(&key).await, Err(FileError::NotFound)));
    assert!(store.read(&key, None).await.is_err() || read_all(store, &key, None).await.is_empty());
    store.delete(&key).await.unwrap();

    let aborted = format!("{prefix}contract-2");
    let mut writer = store.create(&aborted, "cut.bin").await.unwrap();
    writer.write(&data[..5_500_000]).await.unwrap();
    writer.abort().await;
    assert!(matches!(
        store.size(&aborted).await,
        Err(FileError::NotFound)
    ));

    assert!(
        store.create("../escape", "x").await.is_err(),
        "keys stay inside the store"
    );
}

#[tokio::test]
async fn the_file_system_backend_keeps_the_contract_on_disk() {
    let dir = std::env::temp_dir().join(format!("comet-fs-contract-{}", std::process::id()));
    let store = FileStore::file_system(&dir).unwrap();
    contract(&store, "").await;
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "nothing left on disk: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_s3_backend_keeps_the_contract_against_a_real_s3_server() {
    let (_moto, endpoint) = common::s3::server("comet-contract").await;
    let options = S3Options {
        bucket: "comet-contract".into(),
        region: "us-east-1".into(),
        endpoint: Some(endpoint.clone()),
        path_style: true,
        access_key_id: "test-key".into(),
        secret_access_key: "test-secret".into(),
    };
    let store = FileStore::s3(&options).unwrap();
    contract(&store, "ws/uploads/room/user/").await;

    // A signed link reads the object straight from the bucket, and only for its object.
    let mut writer = store.create("ws/signed", "s.txt").await.unwrap();
    writer.write(b"signed bytes").await.unwrap();
    writer.finish().await.unwrap();
    let url = store
        .signed_url("ws/signed", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        url.starts_with(&endpoint) && url.contains("X-Amz-Signature="),
        "{url}"
    );
    let fetched = reqwest::get(&url).await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(&fetched.bytes().await.unwrap()[..], b"signed bytes");
    assert!(
        FileStore::s3(&S3Options::default()).is_err(),
        "no bucket, no store"
    );
}

/// The scripted GridFS primary, and a driver connected to it.
async fn gridfs_primary() -> (Server, mongodb::Database) {
    let python = repo("tests/mongo_wire/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./scripts/install-test-deps.sh",
        python.display()
    );
    let mut child = Command::new(python)
        .arg(repo("tests/mongo_wire/gridfs_primary.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().strip_prefix("PORT ").unwrap().parse().unwrap();
    let client = mongodb::Client::with_uri_str(format!(
        "mongodb://localhost:{port}/meteor?replicaSet=rs0&serverSelectionTimeoutMS=5000"
    ))
    .await
    .unwrap();
    // Its standard input stays open with the child: the primary serves until it closes.
    (Server(child), client.database("meteor"))
}

#[tokio::test]
async fn the_gridfs_backend_keeps_the_contract_in_the_drivers_format() {
    let (_primary, db) = gridfs_primary().await;
    let store = FileStore::gridfs(&db, "rocketchat_uploads");

    // A file Rocket.Chat wrote is read as it is.
    let seeded: Vec<u8> = (0..300_000usize)
        .map(|i| ((i * 7 + 3) % 256) as u8)
        .collect();
    assert_eq!(store.size("rc-file").await.unwrap(), 300_000);
    assert!(read_all(&store, "rc-file", None).await == seeded);
    assert_eq!(
        read_all(&store, "rc-file", Some(261_100..261_200)).await,
        seeded[261_100..261_200].to_vec()
    );

    // What comet writes is in the driver's format: a files document with the length and
    // chunk size, chunks numbered from 0 under `files_id`.
    let mut writer = store.create("comet-file", "note.txt").await.unwrap();
    writer.write(&body(600_000)).await.unwrap();
    writer.finish().await.unwrap();
    let files = db.collection::<mongodb::bson::Document>("rocketchat_uploads.files");
    let chunks = db.collection::<mongodb::bson::Document>("rocketchat_uploads.chunks");
    let file = files
        .find_one(mongodb::bson::doc! {"_id": "comet-file"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(file.get_i64("length").unwrap(), 600_000);
    assert_eq!(file.get_i32("chunkSize").unwrap(), 255 * 1024);
    assert_eq!(file.get_str("filename").unwrap(), "note.txt");
    assert!(file.get_datetime("uploadDate").is_ok());
    let mut cursor = chunks
        .find(mongodb::bson::doc! {"files_id": "comet-file"})
        .await
        .unwrap();
    let mut numbers = Vec::new();
    while let Some(chunk) = cursor.next().await {
        let chunk = chunk.unwrap();
        numbers.push(chunk.get_i32("n").unwrap());
        assert!(chunk.get_binary_generic("data").unwrap().len() <= 255 * 1024);
    }
    numbers.sort_unstable();
    assert_eq!(numbers, vec![0, 1, 2]);
    store.delete("comet-file").await.unwrap();

    contract(&store, "").await;
    let mut cursor = chunks
        .find(mongodb::bson::doc! {"files_id": "contract-2"})
        .await
        .unwrap();
    assert!(
        cursor.next().await.is_none(),
        "an aborted upload leaves no chunk"
    );
}
