//! Workspace tidy checks, run by `cargo test` (they live here because this crate builds
//! fastest): every Rust file starts with a `//!` doc, every `unsafe` block carries a
//! `// SAFETY:` comment, `unsafe` appears only in the FFI crates, only `native` depends on pyo3,
//! the arbiter has no tokio, and ARCHITECTURE.md names every crate.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn crates() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(workspace().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut files = Vec::new();
    for krate in crates() {
        rust_files(&krate, &mut files);
    }
    let missing: Vec<_> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().trim_start().starts_with("//!"))
        .collect();
    assert!(missing.is_empty(), "files without a leading //! doc: {missing:?}");
}

#[test]
fn unsafe_blocks_have_safety_comments_and_stay_in_ffi_crates() {
    for krate in crates() {
        let name = krate.file_name().unwrap().to_string_lossy().to_string();
        let mut files = Vec::new();
        rust_files(&krate, &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                let (block, imp) = (concat!("unsafe", " {"), concat!("unsafe", " impl"));
                if !(code.contains(block) || code.contains(imp)) {
                    continue;
                }
                assert!(
                    name == "native" || name == "arbiter",
                    "unsafe outside the FFI crates: {}:{}",
                    file.display(),
                    i + 1
                );
                let window = &lines[i.saturating_sub(6)..=i];
                assert!(
                    window.iter().any(|l| l.contains("SAFETY")),
                    "unsafe without a // SAFETY: comment: {}:{}",
                    file.display(),
                    i + 1
                );
            }
        }
    }
}

fn dependencies(krate: &Path) -> String {
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
    let start = manifest
        .find("[dependencies]")
        .map(|i| i + "[dependencies]".len())
        .unwrap_or(manifest.len());
    let rest = &manifest[start..];
    rest[..rest.find("\n[").unwrap_or(rest.len())].to_string()
}

#[test]
fn only_native_knows_python_and_the_arbiter_has_no_async_runtime() {
    for krate in crates() {
        let name = krate.file_name().unwrap().to_string_lossy().to_string();
        let deps = dependencies(&krate);
        if name != "native" {
            assert!(!deps.contains("pyo3"), "{name} must not depend on pyo3");
        }
        if name == "arbiter" || name == "config" || name == "http" {
            assert!(!deps.contains("tokio"), "{name} must not depend on tokio");
        }
    }
}

#[test]
fn architecture_md_names_every_crate() {
    let doc = std::fs::read_to_string(workspace().join("ARCHITECTURE.md")).unwrap();
    for krate in crates() {
        let name = krate.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            doc.contains(&format!("crates/{name}")),
            "ARCHITECTURE.md does not mention crates/{name}"
        );
    }
}
