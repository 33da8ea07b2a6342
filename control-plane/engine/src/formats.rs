//! File formats of tables: Parquet, CSV and newline-delimited JSON, CSV and
//! JSON whole-file compressed or not, and how CSV is written.
//!
//! # What belongs here
//! What a file's name says of its format and compression (`part-0.csv.gz`:
//! CSV, gzip), the CSV options a table may give (delimiter, header, quote,
//! escape, null marker), and the DataFusion file format that reads a table so.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Result, SquallError};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    Parquet,
    Csv,
    Json,
}

impl TableFormat {
    /// The format a file name's extension announces, if any (a compression
    /// extension after it, `.csv.gz`, is looked through).
    pub fn from_file_name(name: &str) -> Option<Self> {
        let (stem, _) = split_compression(name);
        let lower = stem.to_ascii_lowercase();
        let ext = lower.rsplit_once('.').map(|(_, e)| e)?;
        match ext {
            "parquet" | "pq" => Some(Self::Parquet),
            "csv" | "tsv" => Some(Self::Csv),
            "json" | "jsonl" | "ndjson" => Some(Self::Json),
            _ => None,
        }
    }
}

impl FromStr for TableFormat {
    type Err = SquallError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "parquet" => Ok(Self::Parquet),
            "csv" => Ok(Self::Csv),
            "json" | "ndjson" | "jsonl" => Ok(Self::Json),
            other => Err(SquallError::InvalidArgument(format!(
                "unknown table format '{other}' (expected parquet, csv or json)"
            ))),
        }
    }
}

impl fmt::Display for TableFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableFormat::Parquet => "parquet",
            TableFormat::Csv => "csv",
            TableFormat::Json => "json",
        })
    }
}

/// A whole file's compression, from its last extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
    Bzip2,
    Xz,
}

impl Compression {
    pub fn file_compression_type(self) -> FileCompressionType {
        match self {
            Compression::None => FileCompressionType::UNCOMPRESSED,
            Compression::Gzip => FileCompressionType::GZIP,
            Compression::Zstd => FileCompressionType::ZSTD,
            Compression::Bzip2 => FileCompressionType::BZIP2,
            Compression::Xz => FileCompressionType::XZ,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
        })
    }
}

/// A file name without its compression extension, and that compression.
pub fn split_compression(name: &str) -> (&str, Compression) {
    let Some((stem, ext)) = name.rsplit_once('.') else {
        return (name, Compression::None);
    };
    let compression = match ext.to_ascii_lowercase().as_str() {
        "gz" | "gzip" => Compression::Gzip,
        "zst" | "zstd" => Compression::Zstd,
        "bz2" => Compression::Bzip2,
        "xz" => Compression::Xz,
        _ => return (name, Compression::None),
    };
    (stem, compression)
}

/// How a CSV table's files are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// The field separator, one ASCII character (default `,`).
    pub delimiter: u8,
    /// Whether the first line names the columns (default true); without
    /// one, columns are `column_1`, `column_2`, ...
    pub header: bool,
    /// The quote character (default `"`).
    pub quote: u8,
    /// The escape character inside quotes, if any (default: none; a quote
    /// is escaped by doubling it).
    pub escape: Option<u8>,
    /// A field that reads as NULL besides the empty one (`NA`, `\N`,
    /// `NULL`): compared whole, case and all (default: only empty fields).
    pub null: Option<String>,
}

/// The longest null marker a table may give.
pub const MAX_NULL_MARKER: usize = 64;

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            delimiter: b',',
            header: true,
            quote: b'"',
            escape: None,
            null: None,
        }
    }
}

impl CsvOptions {
    /// `delimiter=;,header=false,quote=',escape=\,null=NA` (any of them, any
    /// order; `tab`, `comma`, `semicolon` and `pipe` name those delimiters).
    /// A null marker is everything after its `=` up to the next comma.
    pub fn parse(text: &str) -> Result<Self> {
        let mut options = Self::default();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| {
                bad(format!(
                    "CSV option '{part}' is not KEY=VALUE (delimiter, header, quote, escape, null)"
                ))
            })?;
            match key.trim() {
                "delimiter" => options.delimiter = named_char(value)?,
                "header" => {
                    options.header = value.parse().map_err(|_| {
                        bad(format!("CSV header must be true or false, not '{value}'"))
                    })?
                }
                "quote" => options.quote = named_char(value)?,
                "escape" => options.escape = Some(named_char(value)?),
                "null" => options.null = Some(value.to_string()),
                other => {
                    return Err(bad(format!(
                        "unknown CSV option '{other}' (expected delimiter, header, quote, escape, null)"
                    )));
                }
            }
        }
        options.check()?;
        Ok(options)
    }

    /// Refuses options a reader could not tell apart.
    pub fn check(&self) -> Result<()> {
        let chars = [Some(self.delimiter), Some(self.quote), self.escape];
        for c in chars.iter().flatten() {
            if !c.is_ascii() || *c == b'\n' || *c == b'\r' {
                return Err(bad(format!(
                    "CSV delimiter, quote and escape must be ASCII and not a line break, not {:?}",
                    *c as char
                )));
            }
        }
        if self.delimiter == self.quote || Some(self.delimiter) == self.escape {
            return Err(bad(
                "the CSV delimiter must differ from the quote and escape".into(),
            ));
        }
        if let Some(null) = &self.null {
            if null.is_empty() {
                return Err(bad(
                    "the CSV null marker is empty: empty fields are read as NULL already".into(),
                ));
            }
            if null.len() > MAX_NULL_MARKER || null.chars().any(|c| c.is_control()) {
                return Err(bad(format!(
                    "the CSV null marker is at most {MAX_NULL_MARKER} bytes without line \
                     breaks or control characters, not '{}'",
                    null.chars()
                        .take(MAX_NULL_MARKER)
                        .collect::<String>()
                        .escape_default()
                )));
            }
        }
        Ok(())
    }

    /// What DataFusion's schema inference takes for NULL: an empty field or
    /// the marker, whole.
    fn null_regex(&self) -> Option<String> {
        let null = self.null.as_ref()?;
        Some(format!("^(?:|{})$", regex_escape(null)))
    }
}

/// `text` with every regular expression metacharacter escaped.
fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn bad(message: String) -> SquallError {
    SquallError::InvalidArgument(message)
}

/// One ASCII character, or its name.
fn named_char(value: &str) -> Result<u8> {
    let c = match value {
        "tab" | "\\t" => b'\t',
        "comma" => b',',
        "semicolon" => b';',
        "pipe" => b'|',
        "space" => b' ',
        v if v.len() == 1 && v.is_ascii() => v.as_bytes()[0],
        v => {
            return Err(bad(format!(
                "a CSV delimiter, quote or escape is one ASCII character (or tab, comma, \
                 semicolon, pipe, space), not '{}'",
                v.escape_default()
            )));
        }
    };
    Ok(c)
}

/// The DataFusion format that reads files of `format`, `compression` and
/// (CSV) `csv`.
pub fn file_format(
    format: TableFormat,
    compression: Compression,
    csv: &CsvOptions,
) -> Result<Arc<dyn FileFormat>> {
    let compressed = compression.file_compression_type();
    Ok(match format {
        TableFormat::Parquet if compression != Compression::None => {
            return Err(bad(format!(
                "Parquet files are compressed inside; a {compression} compressed Parquet \
                 file cannot be read"
            )));
        }
        TableFormat::Parquet => Arc::new(ParquetFormat::default()),
        TableFormat::Csv => Arc::new(
            CsvFormat::default()
                .with_has_header(csv.header)
                .with_delimiter(csv.delimiter)
                .with_quote(csv.quote)
                .with_escape(csv.escape)
                .with_null_regex(csv.null_regex())
                .with_file_compression_type(compressed),
        ),
        TableFormat::Json => Arc::new(JsonFormat::default().with_file_compression_type(compressed)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_format_and_compression() {
        assert_eq!(
            TableFormat::from_file_name("a.csv.gz"),
            Some(TableFormat::Csv)
        );
        assert_eq!(
            TableFormat::from_file_name("a.JSON.zst"),
            Some(TableFormat::Json)
        );
        assert_eq!(TableFormat::from_file_name("a.gz"), None);
        assert_eq!(
            split_compression("a.ndjson.bz2"),
            ("a.ndjson", Compression::Bzip2)
        );
        assert_eq!(split_compression("a.csv"), ("a.csv", Compression::None));
        assert!(
            file_format(
                TableFormat::Parquet,
                Compression::Gzip,
                &CsvOptions::default()
            )
            .is_err()
        );
    }

    #[test]
    fn parses_csv_options() {
        let o = CsvOptions::parse("delimiter=semicolon,header=false,quote=',escape=\\").unwrap();
        assert_eq!(
            (o.delimiter, o.header, o.quote, o.escape),
            (b';', false, b'\'', Some(b'\\'))
        );
        assert_eq!(CsvOptions::parse("delimiter=tab").unwrap().delimiter, b'\t');
        for (bad, needle) in [
            ("delimiter=;;", "one ASCII character"),
            ("header=maybe", "true or false"),
            ("sep=;", "unknown CSV option 'sep'"),
            ("delimiter=\",quote=\"", "must differ"),
            ("header", "not KEY=VALUE"),
        ] {
            let err = CsvOptions::parse(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn parses_null_markers() {
        let o = CsvOptions::parse("null=NA,delimiter=tab").unwrap();
        assert_eq!((o.null.as_deref(), o.delimiter), (Some("NA"), b'\t'));
        assert_eq!(
            CsvOptions::parse("null=N/A=?").unwrap().null.as_deref(),
            Some("N/A=?")
        );
        let long = format!("null={}", "x".repeat(MAX_NULL_MARKER + 1));
        for (bad, needle) in [
            ("null=", "empty"),
            (long.as_str(), "at most 64 bytes"),
            ("null=a\tb", "control characters"),
        ] {
            let err = CsvOptions::parse(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    /// The marker, metacharacters and all, is what inference takes for NULL:
    /// a column of numbers and markers is a number column.
    #[tokio::test]
    async fn null_markers_infer_types() {
        use datafusion::prelude::SessionContext;
        use object_store::memory::InMemory;
        use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = object_store::path::Path::from("t.csv");
        let body = "a,b,c\n1,x,\n\\N,\\N,2.5\n3,(.*),\\N\n";
        store
            .put(&path, PutPayload::from(body.as_bytes().to_vec()))
            .await
            .unwrap();
        let meta = store.head(&path).await.unwrap();
        let state = SessionContext::new().state();
        let types = |marker: Option<&str>| {
            let csv = CsvOptions {
                null: marker.map(str::to_string),
                ..CsvOptions::default()
            };
            let format = file_format(TableFormat::Csv, Compression::None, &csv).unwrap();
            let (state, store, meta) = (&state, &store, &meta);
            async move {
                let schema = format
                    .infer_schema(state, store, std::slice::from_ref(meta))
                    .await
                    .unwrap();
                schema
                    .fields()
                    .iter()
                    .map(|f| f.data_type().to_string())
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(types(Some("\\N")).await, ["Int64", "Utf8", "Float64"]);
        assert_eq!(types(None).await, ["Utf8", "Utf8", "Utf8"]);
    }
}
