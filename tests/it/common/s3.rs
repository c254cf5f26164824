//! moto's S3 server (PyPI; `scripts/install-test-deps.sh` puts it in `tests/s3/.venv`): a
//! real S3-compatible server on a free port, stopped with the test.
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn server(bucket: &str) -> (Server, String) {
    let moto = std::env::var("COMET_TEST_MOTO_SERVER")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3/.venv/bin/moto_server")
        });
    assert!(
        moto.exists(),
        "{} is missing: run ./scripts/install-test-deps.sh",
        moto.display()
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&moto)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match reqwest::Client::new()
            .put(format!("{endpoint}/{bucket}"))
            .send()
            .await
        {
            Ok(resp) if resp.status().is_success() => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("moto did not start: {other:?}"),
        }
    }
    (server, endpoint)
}
