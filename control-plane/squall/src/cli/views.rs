//! How the CLI client prints what a server answers: job lists, one job (its
//! stages and cost), catalog tables and schedules, as aligned text.

use std::io::Write;

use squall_service::api::{JobView, ScheduleView, TableView};

use super::error::{CliError, Result};
use super::output::{cost_summary, usd};

pub(super) fn print_jobs(jobs: &[JobView], next: Option<i64>) -> Result<()> {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                j.state.as_str().into(),
                time(j.submitted_at_ms),
                duration(j),
                j.rows.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
                j.cost
                    .as_ref()
                    .map(|c| usd(c.usd))
                    .unwrap_or_else(|| "-".into()),
                one_line(&j.sql, 50),
            ]
        })
        .collect();
    print_rows(
        &["ID", "STATE", "SUBMITTED", "TOOK", "ROWS", "COST", "SQL"],
        &rows,
    );
    if let Some(next) = next {
        println!("more: --after {next}");
    }
    std::io::stdout().flush().map_err(|e| CliError::Io {
        context: "cannot print".into(),
        source: e,
    })
}

pub(super) fn print_job(view: &JobView) {
    println!("job        {}", view.id);
    println!("state      {}", view.state.as_str());
    println!("submitted  {}", time(view.submitted_at_ms));
    if let Some(at) = view.started_at_ms {
        println!("started    {}", time(at));
    }
    if let Some(at) = view.finished_at_ms {
        println!("finished   {} (took {})", time(at), duration(view));
    }
    if let Some(rows) = view.rows {
        println!("rows       {rows}");
    }
    if let Some(url) = &view.manifest_url {
        println!("manifest   {url}");
    }
    if let Some(error) = &view.error {
        println!("error      {error}");
    }
    if !view.labels.is_empty() {
        let labels: Vec<String> = view
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("labels     {}", labels.join(", "));
    }
    if let Some(cost) = &view.cost {
        println!("cost       {}", cost_summary(cost));
    }
    match (&view.trace_id, &view.trace_url) {
        (_, Some(url)) => println!("trace      {url}"),
        (Some(id), None) => println!("trace      {id}"),
        _ => {}
    }
    println!("sql        {}", one_line(&view.sql, 200));
    if !view.stages.is_empty() {
        let rows: Vec<Vec<String>> = view
            .stages
            .iter()
            .map(|s| {
                vec![
                    s.stage.to_string(),
                    format!("{}/{}", s.done, s.tasks),
                    s.running.to_string(),
                    s.retried.to_string(),
                    s.failed.to_string(),
                    format!("{}/{}", s.backup_wins, s.backups),
                    indicatif::HumanBytes(s.bytes_scanned).to_string(),
                    indicatif::HumanBytes(s.bytes_written).to_string(),
                    s.cost
                        .as_ref()
                        .map(|c| usd(c.usd))
                        .unwrap_or_else(|| "-".into()),
                    s.cost
                        .as_ref()
                        .map(|c| c.requests.total().to_string())
                        .unwrap_or_else(|| "-".into()),
                    // A fused stage ran in another stage's tasks.
                    match (s.fused_into, s.placement.as_ref()) {
                        (Some(into), _) => format!("in stage {into}"),
                        (None, Some(p)) => p.place.clone(),
                        (None, None) => "-".into(),
                    },
                    format!("{}/{}", s.local_tasks, s.lambda_tasks),
                ]
            })
            .collect();
        println!();
        print_rows(
            &[
                "STAGE",
                "DONE",
                "RUNNING",
                "RETRIED",
                "FAILED",
                "BACKUPS WON",
                "SCANNED",
                "WRITTEN",
                "COST",
                "REQUESTS",
                "PLACED",
                "HERE/LAMBDA",
            ],
            &rows,
        );
        // Why each stage ran where it did, where there was a choice.
        for s in &view.stages {
            if let Some(p) = s.placement.as_ref().filter(|p| p.local_seconds.is_some()) {
                println!("stage {:<4} {}: {}", s.stage, p.place, p.reason);
            }
        }
    }
}

pub(super) fn print_table(view: &TableView) {
    println!("table   {}", view.name);
    println!("url     {}", view.url);
    println!(
        "format  {}",
        view.format.as_deref().unwrap_or("(from file extensions)")
    );
    if let Some(partitions) = &view.partitions {
        println!("partitioned by {partitions}");
    }
    if let Some(csv) = &view.csv {
        println!("csv     {csv}");
    }
    println!();
    let rows: Vec<Vec<String>> = view
        .columns
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.data_type.clone(),
                if c.nullable { "yes" } else { "no" }.into(),
            ]
        })
        .collect();
    print_rows(&["COLUMN", "TYPE", "NULLABLE"], &rows);
}

pub(super) fn print_schedule(view: &ScheduleView) {
    println!("schedule   {}", view.id);
    if let Some(name) = &view.name {
        println!("name       {name}");
    }
    println!(
        "cron       {} ({}) — {}",
        view.cron, view.time_zone, view.description
    );
    println!("enabled    {}", if view.enabled { "yes" } else { "no" });
    println!(
        "overlap    {} / missed runs: {}",
        view.overlap.as_str(),
        view.missed.as_str()
    );
    println!(
        "next run   {}",
        view.next_run_at_ms.map(time).unwrap_or_else(|| "-".into())
    );
    println!(
        "last run   {}",
        view.last_run_at_ms.map(time).unwrap_or_else(|| "-".into())
    );
    println!("skipped    {} runs", view.skipped_runs);
    println!("sql        {}", one_line(&view.job.sql, 200));
}

/// Columns padded to their widest cell.
pub(super) fn print_rows(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", rows_text(header, rows));
}

/// [`print_rows`]'s text.
pub(super) fn rows_text(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = line(header.to_vec()) + "\n";
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// Unix milliseconds as UTC, to the second.
pub(super) fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

pub(super) fn duration(view: &JobView) -> String {
    match (view.started_at_ms, view.finished_at_ms) {
        (Some(start), Some(end)) => format!("{:.1}s", (end - start) as f64 / 1000.0),
        _ => "-".into(),
    }
}

pub(super) fn one_line(sql: &str, max: usize) -> String {
    let flat = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}
