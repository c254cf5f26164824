//! The layers' dependencies point one way (see `src/lib.rs`): a layer's files must not name a
//! layer above it.

#![allow(clippy::unwrap_used, clippy::type_complexity)] // test code: a failed unwrap is a failed test

const LAYERS: &[(&str, &[&str])] = &[
    (
        "model",
        &[
            "protocol", "storage", "observe", "engine", "chat", "session", "rest", "server",
            "config", "app",
        ],
    ),
    (
        "protocol",
        &[
            "storage", "observe", "engine", "chat", "session", "rest", "server", "config", "app",
        ],
    ),
    (
        "storage",
        &[
            "protocol", "observe", "engine", "chat", "session", "rest", "server", "config", "app",
        ],
    ),
    (
        "observe",
        &[
            "protocol", "engine", "chat", "session", "rest", "server", "config", "app",
        ],
    ),
    // The DDP engine knows no chat, no session and no HTTP.
    (
        "engine",
        &[
            "protocol", "chat", "session", "rest", "server", "config", "app",
        ],
    ),
    // Rocket.Chat's services know nothing of sessions, sockets or HTTP.
    (
        "chat",
        &["protocol", "session", "rest", "server", "config", "app"],
    ),
    (
        "session",
        &["chat", "rest", "server", "storage", "config", "app"],
    ),
    (
        "rest",
        &["protocol", "session", "server", "observe", "config", "app"],
    ),
    (
        "server",
        &["engine", "chat", "storage", "observe", "config", "app"],
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

/// The code of a file without comments and without its `#[cfg(test)]` part.
fn code_of(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or("").to_owned();
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The string literals of `code` (`"..."`, escapes kept as written).
fn literals(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            // A char literal or a lifetime: skip a quoted '"' so it opens no string.
            if chars.peek() == Some(&'"') {
                chars.next();
            }
            continue;
        }
        if c != '"' {
            continue;
        }
        let mut lit = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(next) = chars.next() {
                        lit.push('\\');
                        lit.push(next);
                    }
                }
                '"' => break,
                other => lit.push(other),
            }
        }
        out.push(lit);
    }
    out
}

/// The DDP engine names no Rocket.Chat collection, permission or setting: no literal of the
/// engine is a collection name of `chat/collections.rs`, a permission id or a setting id the
/// chat services define, and none starts with `rocketchat_`.
#[test]
fn the_engine_names_nothing_of_rocket_chat() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut chat_names: std::collections::HashSet<String> = std::collections::HashSet::new();
    for line in code_of(&root.join("chat/collections.rs")).lines() {
        if line.trim_start().starts_with("pub const") {
            chat_names.extend(literals(line));
        }
    }
    assert!(chat_names.contains("rocketchat_message"), "{chat_names:?}");
    // Permission and setting ids: the quoted ids of the chat services' default tables
    // (ids of Rocket.Chat's permissions hold a '-', its settings an '_' and a capital).
    let mut chat_files = Vec::new();
    files(&root.join("chat/permissions"), &mut chat_files);
    files(&root.join("chat/settings"), &mut chat_files);
    for path in &chat_files {
        for lit in literals(&code_of(path)) {
            let permission =
                lit.contains('-') && lit.chars().all(|c| c.is_ascii_lowercase() || c == '-');
            let setting = lit.contains('_')
                && lit.starts_with(|c: char| c.is_ascii_uppercase())
                && lit.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if (permission && lit.len() > 6) || setting {
                chat_names.insert(lit);
            }
        }
    }
    assert!(chat_names.contains("view-room-administration") || chat_names.contains("create-c"));
    let mut engine_files = Vec::new();
    files(&root.join("engine"), &mut engine_files);
    let mut named = Vec::new();
    for path in engine_files {
        for lit in literals(&code_of(&path)) {
            if chat_names.contains(&lit) || lit.starts_with("rocketchat_") {
                named.push(format!("{}: \"{lit}\"", path.display()));
            }
        }
    }
    assert!(
        named.is_empty(),
        "the engine names chat things:\n{}",
        named.join("\n")
    );
}

/// The modules of `layer` (its files and folders) and the modules of `layers` each uses.
fn module_graph(
    root: &std::path::Path,
    layers: &[&str],
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut graph = std::collections::BTreeMap::new();
    for layer in layers {
        let mut paths = Vec::new();
        files(&root.join(layer), &mut paths);
        for path in paths {
            let rel = path.strip_prefix(root.join(layer)).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let module = format!("{layer}::{}", first.trim_end_matches(".rs"));
            if module.ends_with("::mod") {
                continue;
            }
            let code = code_of(&path);
            let uses: &mut std::collections::BTreeSet<String> =
                graph.entry(module.clone()).or_default();
            for other_layer in layers {
                let prefix = format!("crate::{other_layer}::");
                for (at, _) in code.match_indices(&prefix) {
                    let name: String = code[at + prefix.len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    let target = format!("{other_layer}::{name}");
                    if target != module && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    {
                        uses.insert(target);
                    }
                }
            }
            // `super::x` from a layer's top file or a folder's mod.rs names a sibling.
            let top = rel.components().count() == 1 || rel.ends_with("mod.rs");
            if top {
                for (at, _) in code.match_indices("super::") {
                    if at > 0 && code[..at].ends_with(':') {
                        continue;
                    }
                    let name: String = code[at + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    let target = format!("{layer}::{name}");
                    if target != module && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    {
                        uses.insert(target);
                    }
                }
            }
        }
    }
    graph
}

/// No module of the engine or the chat services uses one that uses it back, however far
/// round: each can be read, tested and replaced from the bottom up.
#[test]
fn no_module_imports_one_that_imports_it_back() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&root, &["engine", "chat"]);
    assert!(graph.contains_key("chat::accounts"), "{graph:?}");
    let mut circles = Vec::new();
    for start in graph.keys() {
        // Depth-first from `start`, remembering the path, until it comes back.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = std::collections::HashSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if next == start {
                    circles.push(format!("{} -> {start}", path.join(" -> ")));
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}
