//! Replays every fuzz seed and every saved fuzz crash through the fuzz targets' own checks, so
//! plain `cargo test` keeps them fixed: `fuzz/seeds/<target>/*` and `fuzz/regressions/<target>/*`.
//! (Host only: wasm32-unknown-unknown has no file system.)
#![cfg(not(target_arch = "wasm32"))]

#[cfg(test)]
#[path = "../../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

fn inputs(dir: &str, target: &str) -> Vec<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz").join(dir).join(target);
    let Ok(entries) = std::fs::read_dir(&path) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

fn replay(dir: &str) -> usize {
    let mut n = 0;
    let mut failed = Vec::new();
    for (target, check) in harness::TARGETS {
        for file in inputs(dir, target) {
            let Ok(data) = std::fs::read(&file) else {
                failed.push(format!("{} (unreadable)", file.display()));
                continue;
            };
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failed.push(format!("{target}/{}", file.file_name().unwrap_or_default().to_string_lossy()));
            }
            n += 1;
        }
    }
    assert!(failed.is_empty(), "fuzz/{dir}: these inputs fail their fuzz check (see the panics above): {failed:?}");
    n
}

#[test]
fn fuzz_regressions_stay_fixed() {
    replay("regressions");
}

#[test]
fn fuzz_seeds_pass_every_check() {
    assert!(replay("seeds") > 0, "no seeds found under fuzz/seeds");
}

#[test]
fn every_target_has_seeds() {
    for (target, _) in harness::TARGETS {
        assert!(!inputs("seeds", target).is_empty(), "fuzz/seeds/{target} is empty");
    }
}
