//! The reference answers of the TPC-H queries (`tests/tpch/answers/sfX/qNN.csv`)
//! and the comparison `tests/tpch/README.md` prescribes. Used by the tests and by
//! `squall bench tpch`.

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use super::query;
use squall_engine::error::{Result, SquallError};

/// Where the answer of query `q` at scale `scale` ("0.01", "0.1", "1") lies under `dir`.
pub fn answer_path(dir: &Path, scale: &str, q: usize) -> PathBuf {
    dir.join(format!("sf{scale}/q{q:02}.csv"))
}

/// Reads an answer file: `|`-separated, a header row, an empty field is NULL.
pub fn load(path: &Path) -> Result<Vec<Vec<String>>> {
    let unreadable = |e: &dyn std::fmt::Display| {
        SquallError::InvalidArgument(format!("cannot read the answer {}: {e}", path.display()))
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'|')
        .has_headers(false)
        .from_path(path)
        .map_err(|e| unreadable(&e))?;
    reader
        .records()
        .map(|r| {
            r.map(|r| r.iter().map(str::to_string).collect())
                .map_err(|e| unreadable(&e))
        })
        .collect()
}

/// Renders batches as a header row and text rows (NULL as the empty string, dates
/// as ISO `YYYY-MM-DD`, decimals at their scale).
pub fn render(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("");
    let mut rows = Vec::new();
    if let Some(first) = batches.first() {
        rows.push(
            first
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
        );
    }
    for batch in batches {
        // A type arrow cannot print shows as "?" (and then fails any comparison).
        let formatters: Vec<Option<ArrayFormatter>> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok())
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| {
                        f.as_ref()
                            .map_or_else(|| "?".to_string(), |f| f.value(row).to_string())
                    })
                    .collect(),
            );
        }
    }
    rows
}

/// Compares a result with a reference answer as `tpch/README.md` says: numbers with
/// a relative tolerance of 1e-6, strings after trimming trailing spaces, rows in
/// order when `ordered`. A number we print with fewer fractional digits than the
/// reference also matches when it is within one unit of its last digit: DataFusion
/// computes `avg` of a decimal as a decimal with 4 more digits of scale
/// (truncated), where DuckDB prints a double.
/// Header names are not compared (DuckDB and DataFusion name expressions apart).
pub fn compare(expected: &[Vec<String>], got: &[Vec<String>], ordered: bool) -> Result<(), String> {
    let (Some(exp_header), Some(got_header)) = (expected.first(), got.first()) else {
        if expected.len() <= 1 && got.len() <= 1 {
            return Ok(());
        }
        return Err(format!(
            "expected {} rows, got {}",
            expected.len().saturating_sub(1),
            got.len().saturating_sub(1)
        ));
    };
    if exp_header.len() != got_header.len() {
        return Err(format!(
            "expected {} columns {exp_header:?}, got {} {got_header:?}",
            exp_header.len(),
            got_header.len()
        ));
    }
    let mut exp: Vec<&Vec<String>> = expected[1..].iter().collect();
    let mut act: Vec<&Vec<String>> = got[1..].iter().collect();
    if exp.len() != act.len() {
        return Err(format!("expected {} rows, got {}", exp.len(), act.len()));
    }
    if !ordered {
        exp.sort();
        act.sort();
    }
    for (i, (e, a)) in exp.iter().zip(&act).enumerate() {
        if let Some(col) = e.iter().zip(a.iter()).position(|(x, y)| !same_value(x, y)) {
            return Err(format!(
                "row {i}, column '{}': expected {:?}, got {:?}\n  expected row {e:?}\n  got row      {a:?}",
                exp_header[col], e[col], a[col]
            ));
        }
    }
    Ok(())
}

fn same_value(expected: &str, got: &str) -> bool {
    let (e, g) = (expected.trim_end(), got.trim_end());
    if e == g {
        return true;
    }
    let (Ok(x), Ok(y)) = (e.parse::<f64>(), g.parse::<f64>()) else {
        return false;
    };
    let diff = (x - y).abs();
    let relative = 1e-6 * x.abs().max(y.abs());
    // A value printed with fewer fractional digits than the reference may be off
    // by one unit of its last digit (truncated decimal arithmetic).
    let digits = |s: &str| s.split_once('.').map_or(0, |(_, frac)| frac.len());
    let coarser = digits(g) < digits(e);
    let last_digit = 10f64.powi(-(digits(g) as i32));
    diff <= relative || (coarser && diff <= last_digit * 1.000_001)
}

/// Whether TPC-H query `q` orders its result.
pub fn is_ordered(q: usize) -> bool {
    query(q)
        .map(|sql| sql.to_ascii_lowercase().contains("order by"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-row result with columns a (text) and b (number).
    fn result(a: &str, b: &str) -> Vec<Vec<String>> {
        vec![
            vec!["a".to_string(), "b".to_string()],
            vec![a.to_string(), b.to_string()],
        ]
    }

    #[test]
    fn comparison_accepts_printing_differences_and_rejects_wrong_answers() {
        let expected = result("x", "1.50");
        assert!(compare(&expected, &result("x  ", "1.5000001"), true).is_ok());
        assert!(compare(&expected, &result("x", "1.51"), true).is_err());
        assert!(compare(&expected, &result("y", "1.50"), true).is_err());
        // Truncated decimals match a longer reference within one unit of the last
        // digit, but not beyond it.
        let precise = result("x", "0.05008133906964238");
        assert!(compare(&precise, &result("x", "0.050081"), true).is_ok());
        assert!(compare(&precise, &result("x", "0.050083"), true).is_err());
        let header_only = vec![expected[0].clone()];
        assert!(compare(&expected, &header_only, true).is_err());
    }
}
