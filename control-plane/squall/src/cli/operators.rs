//! `squall bench tpch --operators`: where each query's CPU went, by operator
//! on both sides (Squall's tasks and single-node DataFusion), Squall's by
//! stage, and the same summed over the queries. What no operator measured
//! (planning, scheduling, the task's plumbing, the runtime) is the process's
//! CPU less the operators'.

use std::collections::BTreeMap;
use std::fmt::Write;

use squall_tools::bench::QueryBench;

/// Operators shown per query and per stage, the largest first.
const TOP: usize = 8;
const TOP_PER_STAGE: usize = 3;

/// The breakdown of `results`, each query run `iterations` times: seconds
/// per run.
pub(super) fn breakdown(results: &[QueryBench], iterations: usize) -> String {
    let runs = iterations.max(1) as f64;
    let mut out = String::from("CPU by operator, seconds per run (means)\n");
    let mut squall_all = BTreeMap::new();
    let mut datafusion_all = BTreeMap::new();
    for q in results {
        let squall = with_outside(&q.squall_operators, &q.squall_cpu, runs);
        let datafusion = with_outside(&q.datafusion_operators, &q.datafusion_cpu, runs);
        add(&mut squall_all, &squall);
        add(&mut datafusion_all, &datafusion);
        let _ = writeln!(
            out,
            "\nQ{}: squall {:.2} s, datafusion {:.2} s",
            q.query,
            squall.values().sum::<f64>(),
            datafusion.values().sum::<f64>()
        );
        out.push_str(&table(&squall, &datafusion, TOP));
        for (stage, operators) in &q.stage_operators {
            let seconds: BTreeMap<String, f64> = operators
                .iter()
                .map(|(name, us)| (name.clone(), *us as f64 / 1e6 / runs))
                .collect();
            let top: Vec<String> = largest(&seconds, TOP_PER_STAGE)
                .into_iter()
                .map(|(name, s)| format!("{name} {s:.3}"))
                .collect();
            let _ = writeln!(
                out,
                "stage {stage}: {:.3} s ({})",
                seconds.values().sum::<f64>(),
                top.join(", ")
            );
        }
    }
    let _ = writeln!(
        out,
        "\nAll {} queries: squall {:.2} s, datafusion {:.2} s",
        results.len(),
        squall_all.values().sum::<f64>(),
        datafusion_all.values().sum::<f64>()
    );
    out.push_str(&table(&squall_all, &datafusion_all, usize::MAX));
    out
}

/// Seconds per run by operator, with `(outside operators)`: the process's
/// median CPU less the operators' mean, where that is positive.
fn with_outside(
    operators: &BTreeMap<String, u64>,
    cpu: &[std::time::Duration],
    runs: f64,
) -> BTreeMap<String, f64> {
    let mut seconds: BTreeMap<String, f64> = operators
        .iter()
        .map(|(name, us)| (name.clone(), *us as f64 / 1e6 / runs))
        .collect();
    let measured: f64 = seconds.values().sum();
    let process = squall_tools::bench::median(cpu).as_secs_f64();
    seconds.insert("(outside operators)".into(), (process - measured).max(0.0));
    seconds
}

fn add(sum: &mut BTreeMap<String, f64>, more: &BTreeMap<String, f64>) {
    for (name, s) in more {
        *sum.entry(name.clone()).or_insert(0.0) += s;
    }
}

/// The `n` largest entries, largest first.
fn largest(seconds: &BTreeMap<String, f64>, n: usize) -> Vec<(&str, f64)> {
    let mut sorted: Vec<(&str, f64)> = seconds.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
    sorted.truncate(n);
    sorted
}

/// Both sides by operator, Squall's largest first, with the difference.
fn table(squall: &BTreeMap<String, f64>, datafusion: &BTreeMap<String, f64>, n: usize) -> String {
    let mut names: Vec<&str> = squall
        .keys()
        .chain(datafusion.keys())
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names.dedup();
    let get = |side: &BTreeMap<String, f64>, name: &str| side.get(name).copied().unwrap_or(0.0);
    names.sort_by(|a, b| {
        let gap = |name: &str| get(squall, name).max(get(datafusion, name));
        gap(b).total_cmp(&gap(a))
    });
    let mut out = String::from(
        "| operator | squall s | datafusion s | squall − datafusion |\n| --- | ---: | ---: | ---: |\n",
    );
    for name in names.into_iter().take(n) {
        let (s, d) = (get(squall, name), get(datafusion, name));
        let _ = writeln!(out, "| {name} | {s:.3} | {d:.3} | {:+.3} |", s - d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outside_share_is_the_process_less_the_operators() {
        let operators = BTreeMap::from([("HashJoinExec".to_string(), 2_000_000)]);
        let cpu = [std::time::Duration::from_secs(3); 3];
        // Two runs: 1 s of operators a run, 3 s of process.
        let seconds = with_outside(&operators, &cpu, 2.0);
        assert_eq!(seconds["HashJoinExec"], 1.0);
        assert_eq!(seconds["(outside operators)"], 2.0);
        let printed = table(&seconds, &BTreeMap::new(), 1);
        assert!(
            printed.contains("| (outside operators) | 2.000 | 0.000 | +2.000 |"),
            "{printed}"
        );
        assert!(!printed.contains("HashJoinExec"), "{printed}");
    }
}
