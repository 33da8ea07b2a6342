//! Printing a result on stdout: a pretty table, CSV (header then rows) or JSON (one
//! object per line).

use std::io::Write;

use super::error::{CliError, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

#[derive(Debug, Clone, Copy)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

pub fn write_result(
    out: &mut impl Write,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: OutputFormat,
) -> Result<()> {
    let failed = |e: &dyn std::fmt::Display| CliError::Io {
        context: "cannot print the result".into(),
        source: std::io::Error::other(e.to_string()),
    };
    match format {
        OutputFormat::Table => {
            let table = if batches.is_empty() {
                arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(
                    schema.clone(),
                )])
            } else {
                arrow::util::pretty::pretty_format_batches(batches)
            }
            .map_err(|e| failed(&e))?;
            writeln!(out, "{table}").map_err(|e| failed(&e))?;
        }
        OutputFormat::Csv => {
            if batches.is_empty() {
                let header: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                writeln!(out, "{}", header.join(",")).map_err(|e| failed(&e))?;
            }
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            for batch in batches {
                writer.write(batch).map_err(|e| failed(&e))?;
            }
        }
        OutputFormat::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut *out);
            for batch in batches {
                writer.write(batch).map_err(|e| failed(&e))?;
            }
            writer.finish().map_err(|e| failed(&e))?;
        }
    }
    out.flush().map_err(|e| failed(&e))
}

/// Dollars with the precision small amounts need (`$0.000123`, `$1.23`).
pub fn usd(amount: f64) -> String {
    if amount >= 1.0 {
        format!("${amount:.2}")
    } else {
        format!("${amount:.6}")
    }
}

/// One line of what a job used: `$0.000123 (Lambda 1.2 GB-s in 34
/// invocations, 2 cold; 120 GET, 3 HEAD, 40 PUT, 4 LIST, 38 DELETE; 1.9
/// CPU-s)`; the Lambda part only where there was any, the reads sent again
/// (`120 GET of which 2 hedged`) only where some were.
pub fn cost_summary(cost: &squall_engine::Cost) -> String {
    let r = &cost.requests;
    let mut parts = Vec::new();
    if cost.lambda_invocations > 0 {
        parts.push(format!(
            "Lambda {:.1} GB-s in {} invocations, {} cold",
            cost.lambda_gb_seconds, cost.lambda_invocations, cost.cold_starts
        ));
    }
    let hedged = if r.hedged > 0 {
        format!(" of which {} hedged", r.hedged)
    } else {
        String::new()
    };
    parts.push(format!(
        "{} GET{hedged}, {} HEAD, {} PUT, {} LIST, {} DELETE",
        r.get, r.head, r.put, r.list, r.delete
    ));
    parts.push(format!("{:.1} CPU-s", cost.cpu_seconds));
    format!("{} ({})", usd(cost.usd), parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_line_names_hedged_reads_only_where_there_were_some() {
        let mut cost = squall_engine::Cost::default();
        cost.requests.get = 120;
        let line = cost_summary(&cost);
        assert!(line.contains("120 GET, 0 HEAD"), "{line}");
        cost.requests.hedged = 2;
        let line = cost_summary(&cost);
        assert!(line.contains("120 GET of which 2 hedged, 0 HEAD"), "{line}");
    }
}
