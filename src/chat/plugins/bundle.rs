//! A plugin's bundle: a `.tar.gz` of its folder (the manifest at the top, or inside one
//! top folder), unpacked into a new folder.
//!
//! Owns unpacking safely: only plain files and folders, no absolute paths, no `..`, no
//! links, a bounded count and size, and executable bits kept (a compiled plugin needs
//! them). It must not start or register anything.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Largest bundle unpacked, and most entries.
pub const MAX_UNPACKED: u64 = 256 << 20;
const MAX_ENTRIES: usize = 10_000;

/// Why a bundle cannot be unpacked.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BundleError(pub String);

fn bad(text: impl Into<String>) -> BundleError {
    BundleError(text.into())
}

/// `path` as a relative path with plain parts only.
fn safe(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Unpacks the gzipped tar `bytes` into `into` (which must not exist); the folder holding
/// the manifest (`into` itself, or its one top folder).
pub fn unpack(bytes: &[u8], into: &Path) -> Result<PathBuf, BundleError> {
    std::fs::create_dir_all(into).map_err(|e| bad(format!("cannot create a folder: {e}")))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a .tar.gz: {e}")))?;
    let mut total = 0u64;
    for (count, entry) in entries.enumerate() {
        if count >= MAX_ENTRIES {
            return Err(bad(format!("more than {MAX_ENTRIES} entries")));
        }
        let mut entry = entry.map_err(|e| bad(format!("not a .tar.gz: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("an entry's name cannot be read: {e}")))?
            .into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let Some(relative) = safe(&path) else {
            if path.components().all(|c| c == Component::CurDir) {
                continue;
            }
            return Err(bad(format!(
                "an entry outside the folder: {}",
                path.display()
            )));
        };
        let target = into.join(&relative);
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| bad(e.to_string()))?;
            continue;
        }
        if !kind.is_file() {
            return Err(bad(format!(
                "{} is a link or a device: only files and folders are unpacked",
                relative.display()
            )));
        }
        total = total.saturating_add(entry.header().size().unwrap_or(u64::MAX));
        if total > MAX_UNPACKED {
            return Err(bad(format!("over {} MiB unpacked", MAX_UNPACKED >> 20)));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| bad(e.to_string()))?;
        }
        let mut data = Vec::new();
        (&mut entry)
            .take(MAX_UNPACKED)
            .read_to_end(&mut data)
            .map_err(|e| bad(format!("{}: {e}", relative.display())))?;
        std::fs::write(&target, &data).map_err(|e| bad(e.to_string()))?;
        let mode = entry.header().mode().unwrap_or(0o644);
        use std::os::unix::fs::PermissionsExt;
        let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
            .map_err(|e| bad(e.to_string()))?;
    }
    if into.join(super::manifest::FILE).is_file() {
        return Ok(into.to_path_buf());
    }
    let mut tops = std::fs::read_dir(into)
        .map_err(|e| bad(e.to_string()))?
        .flatten()
        .filter(|e| e.path().is_dir());
    match (tops.next(), tops.next()) {
        (Some(top), None) if top.path().join(super::manifest::FILE).is_file() => Ok(top.path()),
        _ => Err(bad(format!("no {} in the bundle", super::manifest::FILE))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::plugins::TestDir;

    fn bundle(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (name, data, mode) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(*mode);
            header.set_entry_type(tar::EntryType::Regular);
            // set_path refuses `..`; write the raw name to test what an attacker could send.
            let raw = &mut header.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn a_bundle_unpacks_inside_its_folder_only() {
        let dir = TestDir::new("bundle");
        let good = bundle(&[
            ("demo/plugin.json", b"{}", 0o644),
            ("demo/bin/run", b"#!/bin/sh\n", 0o755),
        ]);
        let root = unpack(&good, &dir.0.as_path().join("a")).unwrap();
        assert_eq!(root, dir.0.as_path().join("a/demo"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join("bin/run"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        for (name, says) in [("../evil", "outside"), ("/etc/evil", "outside")] {
            let evil = bundle(&[(name, b"x", 0o644)]);
            let err = unpack(&evil, &dir.0.as_path().join("b")).unwrap_err();
            assert!(err.0.contains(says), "{name}: {err}");
        }
        assert!(!dir.0.as_path().join("evil").exists());
        let err = unpack(b"not gzip at all", &dir.0.as_path().join("c")).unwrap_err();
        assert!(err.0.contains("tar.gz"), "{err}");
        let err = unpack(
            &bundle(&[("x/y.txt", b"x", 0o644)]),
            &dir.0.as_path().join("d"),
        )
        .unwrap_err();
        assert!(err.0.contains("no plugin.json"), "{err}");
    }
}
