//! What a benchmark's figures were measured with: the commit, the compiler,
//! the build profile, the CPU and the date, printed above every bench table so
//! that a figure can be reproduced (and is not compared across machines).

use std::process::Command;

/// One line: `commit 1a2b3c4d5e6f, rustc 1.95.0 (…), release build, <CPU> × 2
/// cores, 2026-12-06`. Unknown parts say so.
pub(super) fn provenance() -> String {
    let profile = if cfg!(debug_assertions) {
        "debug build (use --release for figures)"
    } else {
        "release build"
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "measured at commit {}, {}, {profile}, {} × {cores} cores, {}",
        commit(),
        env!("SQUALL_RUSTC"),
        cpu_model().unwrap_or_else(|| "CPU unknown".to_string()),
        chrono::Utc::now().format("%Y-%m-%d"),
    )
}

/// The checkout's commit, marked when files differ from it; "unknown" outside
/// a git checkout.
fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => format!("{commit} with uncommitted changes"),
            _ => commit,
        },
        None => "unknown".to_string(),
    }
}

/// The CPU's model name from /proc/cpuinfo (Linux).
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, model)| model.split_whitespace().collect::<Vec<_>>().join(" "))
}
