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
    model_name(&std::fs::read_to_string("/proc/cpuinfo").ok()?)
}

/// The first `model name` of a /proc/cpuinfo text, its spaces collapsed.
fn model_name(info: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, model)| model.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|model| !model.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_commit_compiler_profile_cpu_and_date() {
        let line = provenance();
        assert!(line.starts_with("measured at commit "), "{line}");
        assert!(line.contains(", rustc "), "{line}");
        assert!(line.contains("debug build"), "tests build in debug: {line}");
        assert!(line.contains(" cores, "), "{line}");
        let date = line.rsplit(", ").next().unwrap_or_default();
        assert_eq!(date.len(), 10, "{line}");
        assert!(date.starts_with("20"), "{line}");
    }

    #[test]
    fn the_cpu_model_is_the_first_model_name() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD  EPYC 7B13\n\
                    processor\t: 1\nmodel name\t: other\n";
        assert_eq!(model_name(info).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(model_name("processor\t: 0\nBogoMIPS\t: 50.00\n"), None);
        assert_eq!(model_name("model name\t:   \n"), None);
    }
}
