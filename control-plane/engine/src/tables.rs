//! Tables: a name, a URL (one file or a prefix of files) and a format.
//!
//! # What belongs here
//! Parsing `NAME[:FORMAT]=URL`, turning local paths into `file://` URLs, listing a
//! table's files (the planner sizes scan tasks from this listing), inferring the
//! format from file extensions, and registering the table with DataFusion as a
//! listing table.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::SessionContext;
use std::collections::{HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use squall_executor::ObjectUrl;
use url::Url;

use crate::access::AccessPolicy;
use crate::commit::{CLAIM_NAME, MANIFEST_NAME, Manifest};
use crate::error::{Result, SquallError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    Parquet,
    Csv,
    Json,
}

impl TableFormat {
    /// The format a file name's extension announces, if any.
    pub fn from_file_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        let ext = lower.rsplit_once('.').map(|(_, e)| e)?;
        match ext {
            "parquet" | "pq" => Some(Self::Parquet),
            "csv" => Some(Self::Csv),
            "json" | "jsonl" | "ndjson" => Some(Self::Json),
            _ => None,
        }
    }

    fn file_format(self) -> Arc<dyn FileFormat> {
        match self {
            TableFormat::Parquet => Arc::new(ParquetFormat::default()),
            TableFormat::Csv => Arc::new(CsvFormat::default().with_has_header(true)),
            TableFormat::Json => Arc::new(JsonFormat::default()),
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

/// A table as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub name: String,
    pub url: String,
    /// None: infer from the files' extensions.
    pub format: Option<TableFormat>,
}

impl TableSpec {
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            format: None,
        }
    }

    pub fn with_format(mut self, format: TableFormat) -> Self {
        self.format = Some(format);
        self
    }
}

impl FromStr for TableSpec {
    type Err = SquallError;

    /// `NAME=URL` or `NAME:FORMAT=URL`.
    fn from_str(s: &str) -> Result<Self> {
        let (head, url) = s.split_once('=').ok_or_else(|| {
            SquallError::InvalidArgument(format!("table '{s}' is not NAME=URL or NAME:FORMAT=URL"))
        })?;
        let (name, format) = match head.split_once(':') {
            Some((name, format)) => (name, Some(format.parse()?)),
            None => (head, None),
        };
        Self::checked(name, url, format)
    }
}

/// Longest table name, in bytes.
pub const MAX_TABLE_NAME: usize = 128;

/// Refuses a table name that is not `[A-Za-z_][A-Za-z0-9_]*` of at most
/// [`MAX_TABLE_NAME`] characters.
pub fn check_table_name(name: &str) -> Result<()> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.len() <= MAX_TABLE_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        return Ok(());
    }
    let shown: String = name.chars().take(MAX_TABLE_NAME).collect();
    Err(SquallError::InvalidArgument(format!(
        "table name '{}' must be 1 to {MAX_TABLE_NAME} letters, digits and '_', not starting \
         with a digit",
        shown.escape_default()
    )))
}

impl TableSpec {
    /// A table named `name` (checked) at `url`, in `format` or the one its
    /// files' extensions say.
    pub fn checked(name: &str, url: &str, format: Option<TableFormat>) -> Result<Self> {
        check_table_name(name)?;
        if url.is_empty() {
            return Err(SquallError::InvalidArgument(format!(
                "table '{name}' has an empty URL"
            )));
        }
        Ok(Self {
            name: name.to_string(),
            url: url.to_string(),
            format,
        })
    }
}

pub use crate::urls::to_url;

/// A table's files, found by listing its URL.
#[derive(Debug, Clone)]
pub struct ResolvedTable {
    pub spec: TableSpec,
    /// The table URL; a prefix ends with '/'.
    pub url: Url,
    pub format: TableFormat,
    pub files: Vec<ObjectMeta>,
}

impl ResolvedTable {
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// What a shared server bounds when it lists a table.
#[derive(Debug, Clone, Default)]
pub struct TableGuard {
    /// Refuse a table whose prefix holds more objects than this.
    pub max_files: Option<usize>,
    /// Refuse a listed local file whose links lead outside what this allows.
    pub access: Option<Arc<AccessPolicy>>,
}

/// Lists a table's files and settles its format. Of a folder that holds a
/// Squall manifest only the files it names are taken, and of one that holds
/// only a job's claim (a job still writing) none (see `output`).
pub async fn resolve_table(
    spec: &TableSpec,
    store: &Arc<dyn ObjectStore>,
    guard: &TableGuard,
) -> Result<ResolvedTable> {
    let table_err = |message: String| SquallError::Table {
        table: spec.name.clone(),
        message,
    };
    let mut url = to_url(&spec.url)?;
    let location = ObjectUrl::from_url(&url).map_err(|e| table_err(e.to_string()))?;
    let path = location.path();

    let single = if url.path().ends_with('/') {
        None
    } else {
        match store.head(path).await {
            Ok(meta) => Some(meta),
            Err(object_store::Error::NotFound { .. }) => None,
            // A local directory named without a trailing slash.
            Err(_) if url.scheme() == "file" && std::path::Path::new(url.path()).is_dir() => None,
            Err(e) => return Err(table_err(format!("cannot read {url}: {e}"))),
        }
    };
    let files: Vec<ObjectMeta> = match single {
        Some(meta) => vec![meta],
        None => {
            if !url.path().ends_with('/') {
                url.set_path(&format!("{}/", url.path()));
            }
            list_folder(store, &url, path, guard)
                .await
                .map_err(table_err)?
        }
    };
    if files.is_empty() {
        return Err(table_err(format!("no files at {url}")));
    }
    if let Some(access) = &guard.access {
        for file in &files {
            let mut file_url = url.clone();
            file_url.set_path(&format!("/{}", file.location));
            access.check_listed(&spec.name, &file_url)?;
        }
    }

    let format = match spec.format {
        Some(format) => format,
        None => format_of_names(&spec.name, &files, &url).map_err(table_err)?,
    };
    // Keep only the files of the table's format when their names say so.
    let named: Vec<ObjectMeta> = files
        .iter()
        .filter(|f| f.location.filename().and_then(TableFormat::from_file_name) == Some(format))
        .cloned()
        .collect();
    let files = if named.is_empty() { files } else { named };
    Ok(ResolvedTable {
        spec: spec.clone(),
        url,
        format,
        files,
    })
}

/// The data files under the folder `path` (at `url`): listed, at most
/// `guard.max_files`, less what Squall's marks exclude and hidden or marker
/// files, in name order.
async fn list_folder(
    store: &Arc<dyn ObjectStore>,
    url: &url::Url,
    path: &object_store::path::Path,
    guard: &TableGuard,
) -> std::result::Result<Vec<ObjectMeta>, String> {
    let mut listing = store.list(Some(path));
    let mut files: Vec<ObjectMeta> = Vec::new();
    while let Some(meta) = listing
        .try_next()
        .await
        .map_err(|e| format!("cannot list {url}: {e}"))?
    {
        files.push(meta);
        if let Some(max) = guard.max_files
            && files.len() > max
        {
            return Err(format!(
                "{url} holds more than {max} files, over the limit of {max} files \
                 per table; name a narrower prefix"
            ));
        }
    }
    let mut files = committed_files(store, files).await?;
    // Hidden and marker files (`.crc`, `_SUCCESS`, manifests) are not data.
    // Only the parts below the table's prefix count: the prefix itself may
    // sit in a hidden folder.
    files.retain(|f| {
        f.location.prefix_match(path).is_some_and(|mut rest| {
            rest.all(|p| {
                let p = p.as_ref();
                !p.starts_with('.') && !p.starts_with('_')
            })
        })
    });
    files.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(files)
}

/// The one format the names of `files` (of table `table`, at `url`) say.
fn format_of_names(
    table: &str,
    files: &[ObjectMeta],
    url: &url::Url,
) -> std::result::Result<TableFormat, String> {
    let mut formats: Vec<TableFormat> = files
        .iter()
        .filter_map(|f| f.location.filename().and_then(TableFormat::from_file_name))
        .collect();
    formats.dedup();
    match formats.as_slice() {
        [format] => Ok(*format),
        [] => Err(format!(
            "cannot tell the format of the files at {url} from their names; \
             name it: --table {table}:parquet|csv|json=URL"
        )),
        _ => Err(format!(
            "files at {url} are of several formats; point the table at one kind"
        )),
    }
}

/// `files` less those a Squall job's marks exclude: in a folder holding a
/// manifest, the files it does not name; in a folder holding only a claim, all.
async fn committed_files(
    store: &Arc<dyn ObjectStore>,
    files: Vec<ObjectMeta>,
) -> std::result::Result<Vec<ObjectMeta>, String> {
    let folder_of = |p: &object_store::path::Path| {
        p.as_ref()
            .rsplit_once('/')
            .map_or(String::new(), |(folder, _)| folder.to_string())
    };
    let marked = |name: &str| {
        files
            .iter()
            .filter(|f| f.location.filename() == Some(name))
            .map(|f| f.location.clone())
            .collect::<Vec<_>>()
    };
    let manifests = marked(MANIFEST_NAME);
    let claims = marked(CLAIM_NAME);
    if manifests.is_empty() && claims.is_empty() {
        return Ok(files);
    }
    // Folder → the paths its manifest names.
    let mut named: HashMap<String, HashSet<String>> = HashMap::new();
    let read = futures::stream::iter(manifests.into_iter().map(|location| async move {
        let read = async {
            let bytes = store.get(&location).await?.bytes().await?;
            Ok::<_, object_store::Error>(bytes)
        };
        let bytes = read
            .await
            .map_err(|e| format!("cannot read the manifest {location}: {e}"))?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the manifest {location} is unreadable: {e}"))?;
        let paths = manifest
            .files
            .iter()
            .filter_map(|f| ObjectUrl::parse(&f.url).ok())
            .map(|u| u.path().to_string())
            .collect::<HashSet<_>>();
        Ok::<_, String>((location, paths))
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<_>>()
    .await?;
    for (location, paths) in read {
        named.insert(folder_of(&location), paths);
    }
    let writing: HashSet<String> = claims
        .iter()
        .map(folder_of)
        .filter(|folder| !named.contains_key(folder))
        .collect();
    Ok(files
        .into_iter()
        .filter(|f| {
            let folder = folder_of(&f.location);
            match named.get(&folder) {
                Some(paths) => paths.contains(f.location.as_ref()),
                None => !writing.contains(&folder),
            }
        })
        .collect())
}

/// Registers a resolved table with DataFusion as a listing table.
pub async fn register_table(ctx: &SessionContext, table: &ResolvedTable) -> Result<()> {
    let table_err = |message: String| SquallError::Table {
        table: table.spec.name.clone(),
        message,
    };
    let listing_url = ListingTableUrl::parse(table.url.as_str())
        .map_err(|e| table_err(format!("invalid URL: {e}")))?;
    // The extension filter must match exactly what `resolve_table` kept.
    let extension = common_extension(&table.files);
    let options = ListingOptions::new(table.format.file_format()).with_file_extension(extension);
    let state = ctx.state();
    let store = state
        .runtime_env()
        .object_store(listing_url.object_store())
        .map_err(|e| table_err(e.to_string()))?;
    // The files are known from `resolve_table`: no second listing.
    let inferred = options
        .format
        .infer_schema(&state, &store, &table.files)
        .await;
    let schema = match inferred {
        Ok(schema) => schema,
        Err(e) => {
            let culprit = unreadable_file(&state, &store, table).await;
            let what = culprit.unwrap_or_else(|| format!("its files at {}", table.url));
            return Err(table_err(format!("cannot read the schema of {what}: {e}")));
        }
    };
    let config = ListingTableConfig::new(listing_url)
        .with_listing_options(options)
        .with_schema(schema);
    let provider = ListingTable::try_new(config).map_err(|e| table_err(e.to_string()))?;
    ctx.register_table(table.spec.name.as_str(), Arc::new(provider))
        .map_err(|e| table_err(e.to_string()))?;
    Ok(())
}

/// The first of (at most 64 of) a table's files whose schema cannot be read, as a
/// URL, to name it in the error.
async fn unreadable_file(
    state: &datafusion::execution::SessionState,
    store: &Arc<dyn ObjectStore>,
    table: &ResolvedTable,
) -> Option<String> {
    let format = table.format.file_format();
    for file in table.files.iter().take(64) {
        if format
            .infer_schema(state, store, std::slice::from_ref(file))
            .await
            .is_err()
        {
            let mut url = table.url.clone();
            url.set_path(&format!("/{}", file.location));
            return Some(url.to_string());
        }
    }
    None
}

/// The extension (with its dot) all files share, or "" when they do not share one.
fn common_extension(files: &[ObjectMeta]) -> String {
    let ext = |f: &ObjectMeta| {
        f.location
            .filename()
            .and_then(|n| n.rsplit_once('.').map(|(_, e)| format!(".{e}")))
    };
    let first = files.first().and_then(ext);
    if files.iter().all(|f| ext(f) == first) {
        first.unwrap_or_default()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::PutPayload;
    use object_store::memory::InMemory;

    #[test]
    fn parses_table_arguments() {
        let t: TableSpec = "lineitem=s3://b/li/".parse().unwrap();
        assert_eq!(t, TableSpec::new("lineitem", "s3://b/li/"));
        let t: TableSpec = "orders:csv=data/o.txt".parse().unwrap();
        assert_eq!(t.format, Some(TableFormat::Csv));
        assert!("noequals".parse::<TableSpec>().is_err());
        assert!("9x=a".parse::<TableSpec>().is_err());
        assert!(
            "x:xml=a"
                .parse::<TableSpec>()
                .unwrap_err()
                .to_string()
                .contains("xml")
        );
    }

    #[tokio::test]
    async fn resolves_prefixes_and_infers_formats() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for key in [
            "t/a.csv",
            "t/b.csv",
            "t/_SUCCESS",
            "mixed/a.csv",
            "mixed/b.json",
        ] {
            store
                .put(&key.into(), PutPayload::from_static(b"x\n1\n"))
                .await
                .unwrap();
        }
        let guard = TableGuard::default();
        let t = resolve_table(&TableSpec::new("t", "memory:///t"), &store, &guard)
            .await
            .unwrap();
        assert_eq!(t.format, TableFormat::Csv);
        assert_eq!(t.files.len(), 2);
        assert_eq!(t.url.as_str(), "memory:///t/");

        let one = resolve_table(&TableSpec::new("t", "memory:///t/a.csv"), &store, &guard)
            .await
            .unwrap();
        assert_eq!(one.files.len(), 1);

        let err = resolve_table(&TableSpec::new("m", "memory:///mixed/"), &store, &guard)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("several formats"), "{err}");
        let err = resolve_table(&TableSpec::new("n", "memory:///nothing/"), &store, &guard)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("table 'n': no files"), "{err}");
        assert!(err.is_user_error());
    }

    #[tokio::test]
    async fn manifests_and_claims_decide_which_files_count() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let manifest = serde_json::json!({
            "job_id": "j", "rows": 2, "columns": [],
            "files": [{"url": "memory:///r/a/part-0.csv", "rows": 1, "bytes": 4}]
        });
        for (key, body) in [
            ("r/a/part-0.csv", "x\n1\n".to_string()),
            ("r/a/part-1.csv", "x\n2\n".to_string()),
            ("r/a/_squall_manifest.json", manifest.to_string()),
            ("r/b/part-0.csv", "x\n3\n".to_string()),
            ("r/b/_squall_claim.json", "{\"job_id\": \"k\"}".to_string()),
            ("r/c/part-0.csv", "x\n4\n".to_string()),
        ] {
            store
                .put(&key.into(), PutPayload::from(body))
                .await
                .unwrap();
        }
        let guard = TableGuard::default();
        let t = resolve_table(&TableSpec::new("r", "memory:///r/"), &store, &guard)
            .await
            .unwrap();
        let names: Vec<String> = t.files.iter().map(|f| f.location.to_string()).collect();
        // a: only what the manifest names; b: a job still writing; c: no marks.
        assert_eq!(names, ["r/a/part-0.csv", "r/c/part-0.csv"]);

        let bounded = TableGuard {
            max_files: Some(5),
            access: None,
        };
        let err = resolve_table(&TableSpec::new("r", "memory:///r/"), &store, &bounded)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("more than 5 files"), "{err}");
    }
}
