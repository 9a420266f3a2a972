//! Workspace tidy checks, run by `cargo test` (they live here because this crate builds
//! fastest): every Rust file starts with a `//!` doc, every `unsafe` block carries a
//! `// SAFETY:` comment, `unsafe` appears only in the FFI and OS crates (`native`, `arbiter`,
//! `shm`, `net`), only `native` depends on pyo3, the core crates reach no tokio, the arbiter reaches
//! only `shm`, the metric label spaces and libc, and `shm` only those two (all checked on the
//! dependency tree, not the manifests), and ARCHITECTURE.md names every crate.

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
                    ["native", "arbiter", "shm", "net"].contains(&name.as_str()),
                    "unsafe outside the FFI and OS crates: {}:{}",
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

/// Every package `package` depends on at run time, directly or not (`cargo tree`, normal
/// dependencies only: a test's dev-dependency is not the crate's), by name.
fn reachable_dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["tree", "--edges", "normal", "--prefix", "none", "--package", package])
        .current_dir(workspace())
        .output()
        .expect("run cargo tree");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut names: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != package)
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The package name of the crate in `crates/<dir>`.
fn package_name(krate: &Path) -> String {
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
    let line = manifest.lines().find(|l| l.starts_with("name = ")).expect("a package name");
    line.trim_start_matches("name = ").trim_matches('"').to_string()
}

#[test]
fn only_native_reaches_python_and_the_core_crates_reach_no_async_runtime() {
    for krate in crates() {
        let dir = krate.file_name().unwrap().to_string_lossy().to_string();
        let deps = reachable_dependencies(&package_name(&krate));
        if dir != "native" {
            assert!(!deps.iter().any(|d| d.starts_with("pyo3")), "{dir} reaches pyo3: {deps:?}");
        }
        if ["arbiter", "config", "http", "metrics", "shm", "cache", "balance"]
            .contains(&dir.as_str())
        {
            assert!(!deps.iter().any(|d| d == "tokio"), "{dir} reaches tokio: {deps:?}");
        }
    }
}

#[test]
fn the_arbiter_reaches_only_libc_shared_memory_and_the_metric_label_spaces() {
    // The master runs it: no runtime, no thread, no I/O library (ARCHITECTURE.md).
    let deps = reachable_dependencies("ferrocorn-arbiter");
    let expected = ["ferrocorn-metrics", "ferrocorn-shm", "libc"];
    assert_eq!(deps, expected, "the arbiter reaches more: {deps:?}");
}

#[test]
fn shared_memory_reaches_only_libc_and_the_metric_label_spaces() {
    // Master, workers and later shared stores map it: libc, and the label spaces that size
    // the scoreboard's counters (ARCHITECTURE.md).
    let deps = reachable_dependencies("ferrocorn-shm");
    assert_eq!(deps, ["ferrocorn-metrics", "libc"], "shm reaches more: {deps:?}");
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

#[test]
fn the_socket_crate_reaches_no_python_and_no_shared_memory() {
    // Listeners and the client stream serve Rust-only paths too (cache hits, the balancer).
    let deps = reachable_dependencies("ferrocorn-net");
    for forbidden in ["pyo3", "ferrocorn-shm", "ferrocorn-arbiter"] {
        assert!(
            !deps.iter().any(|d| d.starts_with(forbidden)),
            "net reaches {forbidden}: {deps:?}"
        );
    }
}
