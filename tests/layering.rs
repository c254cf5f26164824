//! The layers' dependencies point one way (see `src/lib.rs`): a layer's files must not name a
//! layer above it.

#![allow(clippy::unwrap_used, clippy::type_complexity)] // test code: a failed unwrap is a failed test

const LAYERS: &[(&str, &[&str])] = &[
    (
        "model",
        &[
            "protocol", "storage", "observe", "services", "session", "rest", "server", "config",
            "app",
        ],
    ),
    (
        "protocol",
        &[
            "storage", "observe", "services", "session", "rest", "server", "config", "app",
        ],
    ),
    (
        "storage",
        &[
            "protocol", "observe", "services", "session", "rest", "server", "config", "app",
        ],
    ),
    (
        "observe",
        &[
            "protocol", "services", "session", "rest", "server", "config", "app",
        ],
    ),
    (
        "services",
        &["protocol", "session", "rest", "server", "config", "app"],
    ),
    ("session", &["rest", "server", "storage", "config", "app"]),
    (
        "rest",
        &["protocol", "session", "server", "observe", "config", "app"],
    ),
    (
        "server",
        &["services", "storage", "observe", "config", "app"],
    ),
];

fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn layers_only_use_layers_below_them() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (layer, forbidden) in LAYERS {
        let mut paths = Vec::new();
        files(&root.join(layer), &mut paths);
        assert!(!paths.is_empty(), "layer {layer} has no files");
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for other in *forbidden {
                    if code.contains(&format!("crate::{other}::"))
                        || code.contains(&format!("crate::{other};"))
                        || code.contains(&format!("crate::{other}}}"))
                    {
                        violations.push(format!(
                            "{}:{}: {layer} uses {other}",
                            path.display(),
                            n + 1
                        ));
                    }
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// The transports share SockJS framing through `server/framing.rs`; neither names the other.
#[test]
fn transports_do_not_use_each_other() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server");
    for (file, other) in [("sockjs.rs", "websocket::"), ("websocket.rs", "sockjs::")] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let uses: Vec<_> = text
            .lines()
            .enumerate()
            .filter(|(_, line)| line.split("//").next().unwrap_or("").contains(other))
            .map(|(n, _)| n + 1)
            .collect();
        assert!(uses.is_empty(), "{file} uses {other} on lines {uses:?}");
    }
}
